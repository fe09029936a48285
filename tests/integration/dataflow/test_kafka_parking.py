"""Idle consumers on the embedded broker are parked and woken by their next record."""
from __future__ import annotations

import time

from confluent_kafka import OFFSET_END, TopicPartition

from dataflow.kafka import EMBEDDED_PROFILE, detect_profile
from dataflow.kafka_parking import parking_lot
from tests.waiting import wait_until


def test_the_embedded_broker_is_recognised(kafka):
    assert kafka.broker is not None, "these tests need the embedded broker"
    assert detect_profile(kafka.settings) is EMBEDDED_PROFILE


def poll_until(consumer, spot, predicate, timeout_s: float):
    """Drive a consumer as an owner would (poll, then tell its spot) until ``predicate(got)``."""
    got = []
    deadline = time.monotonic() + timeout_s
    while not predicate(got):
        assert time.monotonic() < deadline, f"got {len(got)} records, parked={spot.parked}"
        if spot.parked and spot.woken:
            spot.unpark()
        msgs = consumer.consume(100, 0.01)
        got.extend(m.value() for m in msgs if m.error() is None)
        spot.active(len(msgs))
    return got


def test_idle_consumer_parks_and_wakes_on_its_next_record(kafka):
    full, empty = kafka.new_topic("parked-full"), kafka.new_topic("parked-empty")
    producer = kafka.producer()
    for i in range(3):
        producer.produce(full, b"old%d" % i)
    producer.flush(10)
    lot = parking_lot(kafka.settings)
    assert lot is not None
    for topic in (full, empty):  # one partition read before, one never (no position yet)
        consumer = kafka.consumer()
        consumer.assign([TopicPartition(topic, 0, 0 if topic == full else OFFSET_END)])
        spot = lot.spot(consumer, park_after_s=0.2)
        try:
            if topic == full:
                assert poll_until(consumer, spot, lambda got: len(got) == 3, 10) == [b"old0", b"old1", b"old2"]
            poll_until(consumer, spot, lambda got: spot.parked, 10)  # noqa: B023  # called within this iteration
            checks = lot.checks
            wait_until(lambda: lot.checks >= checks + 3, what="the watcher to look")  # noqa: B023  # called within this iteration
            assert spot.parked and not spot.woken  # nothing new: stays parked
            producer.produce(topic, b"new")
            producer.flush(10)
            got = poll_until(consumer, spot, lambda got: b"new" in got, 10)
            assert got == [b"new"] and not spot.parked
        finally:
            spot.close()
            consumer.close()
