"""produce / produce_async: a full local queue (BufferError) is waited out, never dropped."""
from __future__ import annotations

import asyncio

from dataflow.kafka_produce import produce, produce_async


class QueueFullThenAccepts:
    """A producer whose queue is full for the first ``refusals`` attempts."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.polls: list[float] = []
        self.produced: list[tuple] = []
        self.attempts = 0

    def produce(self, topic, *args, **kwargs):
        self.attempts += 1
        if self.refusals:
            self.refusals -= 1
            raise BufferError("Local: Queue full")
        self.produced.append((topic, args, kwargs))

    def poll(self, timeout):
        self.polls.append(timeout)
        return 0


def test_produce_polls_while_the_queue_is_full_then_queues_once():
    p = QueueFullThenAccepts(refusals=3)
    produce(p, "t", b"v", "k", 0, headers=None)
    assert p.produced == [("t", (b"v", "k", 0), {"headers": None})]
    assert len(p.polls) == 3


def test_produce_async_yields_to_the_loop_instead_of_polling():
    p = QueueFullThenAccepts(refusals=100)  # until the loop runs the other work below

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: setattr(p, "refusals", 0))  # other work, runs only if the loop gets control
        await produce_async(p, "t", key="k", value=b"v")

    asyncio.run(main())
    assert p.produced == [("t", (), {"key": "k", "value": b"v"})]
    assert p.attempts == 2 and p.polls == []  # refused once, then the loop ran and it was queued
