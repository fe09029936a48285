"""TopicSetConsumer against the embedded broker: a group id used again after its consumer left."""
from __future__ import annotations

import time

import pytest

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
