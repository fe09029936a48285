"""Producing with backpressure: while librdkafka's local queue is full, ``produce`` raises
``BufferError``; the producer then waits for deliveries to drain and tries again.

Two ways to wait, one per kind of caller:

* ``produce``: on a thread that serves the producer's callbacks itself, waiting means polling
  (which delivers, and so frees the queue);
* ``produce_async``: on an event loop, for a producer polled by another thread, waiting means
  yielding to the loop -- never sleeping on it.

A loop where a function call per message counts may call ``producer.produce`` itself and hand
only a message refused with ``BufferError`` to ``produce``.
"""
from __future__ import annotations

import asyncio
from typing import Any

DRAIN_POLL_S = 0.05  # a poll while the queue is full: serves delivery callbacks for up to this long
DRAIN_YIELD_S = 0.01  # how long an event-loop caller yields before trying again


def produce(producer: Any, topic: str, *args: Any, **kwargs: Any) -> None:
    """``producer.produce(topic, *args, **kwargs)``, polling the producer while its queue is full."""
    while True:
        try:
            producer.produce(topic, *args, **kwargs)
            return
        except BufferError:
            producer.poll(DRAIN_POLL_S)


async def produce_async(producer: Any, topic: str, *args: Any, **kwargs: Any) -> None:
    """``producer.produce(topic, *args, **kwargs)`` from an event loop, for a producer another
    thread polls: while its queue is full, yield to the loop and try again."""
    while True:
        try:
            producer.produce(topic, *args, **kwargs)
            return
        except BufferError:
            await asyncio.sleep(DRAIN_YIELD_S)
