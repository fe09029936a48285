"""One producer per engine process (and Kafka cluster), lent to every at-least-once runner.

Why: a librdkafka producer costs a handful of threads, buffers and broker connections. With one
per pipeline version, an engine running a hundred versions ran hundreds of threads that mostly
waited. Kafka allows any number of writers on one producer, so at-least-once runners share one;
exactly-once runners keep their own, because a Kafka transaction belongs to one producer and the
``transactional.id`` must be per version and replica.

Sharing changes two things for a runner:

* a delivery failure is reported to the runner whose record failed: every record is produced
  with that runner's callback (called for failures only: ``delivery.report.only.error``, so a
  delivered record costs no Python call);
* ``flush()`` at a checkpoint waits for every runner's records, not only its own; that is slower
  only when others are busy, never wrong.

The producer is created when the first runner asks and flushed and dropped when the last one
gives it back, so an engine with no pipelines holds no producer.

Runner producers wait ``LINGER_MS`` (0.1 ms) for more records before a produce request instead
of librdkafka's 0 elsewhere in this project. With no linger, every record queued while the
producer's broker thread was idle woke that thread (a write on its wake-up pipe, a poll round on
the broker thread), about once per record for a step's bursts of outputs; with 0.1 ms it wakes
about once per 0.1 ms. A lone record waits at most 0.1 ms more (a hop on the embedded broker takes
~5-7 ms), so latency paths keep what ``KafkaSettings.producer`` says about linger.
"""
from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import Producer

from dataflow.kafka import KafkaSettings

LINGER_MS = 0.1

_lock = threading.Lock()
_shared: dict[tuple[KafkaSettings, int], list[Any]] = {}    # key -> [producer, number of runners using it]


def _key(settings: KafkaSettings, max_message_bytes: int) -> tuple[KafkaSettings, int]:
    return settings, max_message_bytes


def runner_producer_config(settings: KafkaSettings, max_message_bytes: int, **extra: Any) -> dict[str, Any]:
    """A runner producer's settings (the shared one's, and an exactly-once version's own with its
    ``transactional.id`` in ``extra``): failures-only delivery reports (a Python callback per
    delivered record costs ~1-2 us) and ``LINGER_MS``."""
    return settings.producer(**{"message.max.bytes": max_message_bytes, "linger.ms": LINGER_MS,
                                "delivery.report.only.error": True, **extra})


def acquire(settings: KafkaSettings, max_message_bytes: int) -> Producer:
    """The process's producer for these settings (created on first use)."""
    key = _key(settings, max_message_bytes)
    with _lock:
        entry = _shared.get(key)
        if entry is None:
            entry = _shared[key] = [Producer(runner_producer_config(settings, max_message_bytes)), 0]
        entry[1] += 1
        producer: Producer = entry[0]
        return producer


def release(producer: Producer, timeout_s: float = 10.0) -> None:
    """Give the producer back; the last runner to do so flushes it and lets it go."""
    with _lock:
        for key, entry in _shared.items():
            if entry[0] is producer:
                entry[1] -= 1
                if entry[1] > 0:
                    return
                del _shared[key]
                break
        else:
            return
    producer.flush(timeout_s)
