"""TopicSetConsumer against the embedded broker: a group id used again after its consumer left; reading on demand."""
from __future__ import annotations

import time

import pytest

from gateways import kafka_io
from gateways.kafka_io import TopicSetConsumer
from tests.waiting import wait_until


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cooperative", [True, False])
def test_group_serves_a_new_consumer_after_one_left_while_topics_were_changing(kafka, cooperative):
    """Topics removed in quick succession (pipelines unloaded) and the consumer stopped: the next
    consumer of the same group (pipelines loaded again) is assigned its topics. A consumer that
    left while a join was pending used to leave the group with no working leader for ever."""
    first = [kafka.new_topic("first") for _ in range(8)]
    second = [kafka.new_topic("second") for _ in range(3)]
    group = kafka.unique("tsc")
    c1 = TopicSetConsumer(kafka.settings, group, lambda msgs: None, start_at_end=True, cooperative=cooperative)
    try:
        for t in first:
            c1.add_topic(t)
        wait_until(lambda: all(c1.partitions(t) for t in first), what="first topics assigned")
        for t in first[:-1]:  # each removal changes the subscription, the next comes mid-join
            c1.remove_topic(t)
            time.sleep(0.05)  # the pace of unloads is what is under test
    finally:
        c1.close()
    c2 = TopicSetConsumer(kafka.settings, group, lambda msgs: None, start_at_end=True, cooperative=cooperative)
    try:
        for t in second:
            c2.add_topic(t)
        wait_until(lambda: all(c2.partitions(t) for t in second), timeout=60, what="second consumer assigned")
    finally:
        c2.close()


@pytest.mark.timeout(120)
def test_read_on_demand_fetches_only_expected_topics_and_keeps_their_positions(kafka, monkeypatch):
    """On the embedded broker a ``read_on_demand`` consumer fetches a topic only while a record
    is expected on it; a record written while its topic was paused is read once it is expected,
    and a topic paused for long is read up to its end meanwhile (so a later request does not
    first read a backlog), then paused again."""
    if kafka.broker is None:
        pytest.skip("partitions are paused only on the embedded broker")
    monkeypatch.setattr(kafka_io, "CATCH_UP_AFTER_S", 0.5)
    kept, idle = kafka.new_topic("on-demand-kept"), kafka.new_topic("on-demand-idle")
    got: list[bytes] = []
    consumer = TopicSetConsumer(kafka.settings, kafka.unique("tsc"), lambda msgs: got.extend(m.value() for m in msgs),
                                start_at_end=True, cooperative=True, read_on_demand=True)
    producer = kafka.producer()
    try:
        for t in (kept, idle):
            consumer.add_topic(t)
        wait_until(lambda: consumer.partitions(kept) and consumer.partitions(idle), what="topics assigned")
        wait_until(lambda: consumer.fetched_partitions() == set(), what="nothing expected: all paused")

        consumer.expect(kept)   # a request is about to be sent ...
        producer.produce(kept, b"answer-1")   # ... and its answer comes
        producer.flush(10)
        wait_until(lambda: b"answer-1" in got, what="the expected record")
        assert consumer.fetched_partitions() == {(kept, 0)}
        consumer.stop_expecting(kept)
        wait_until(lambda: consumer.fetched_partitions() == set(), what="kept paused again")

        producer.produce(kept, b"answer-2")   # written while paused: read once expected
        producer.flush(10)
        consumer.expect(kept)
        wait_until(lambda: b"answer-2" in got, what="a record written while paused")
        consumer.stop_expecting(kept)

        producer.produce(idle, b"nobody's")   # the idle topic is read up to its end, then paused
        producer.flush(10)
        wait_until(lambda: b"nobody's" in got and consumer.fetched_partitions() == set(),
                   what="the idle topic caught up and paused again")
        consumer.expect(idle)
        producer.produce(idle, b"answer-3")
        producer.flush(10)
        wait_until(lambda: b"answer-3" in got, what="the idle topic's expected record")
        consumer.stop_expecting(idle)
    finally:
        consumer.close()
