"""Kafka helpers for tests and benchmarks: a broker per session, explicit topics, unique groups.

Set ``DATAFLOW_TEST_KAFKA=host:port`` to run the integration tests against an existing Kafka
instead of starting the embedded broker.
"""
from __future__ import annotations

import itertools
import os
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer

from dataflow.broker import EmbeddedBroker
from dataflow.kafka import KafkaSettings, ensure_topics

TEST_KAFKA_ENV = "DATAFLOW_TEST_KAFKA"


@dataclass
class KafkaTestEnv:
    """What a test needs: settings with the recommended client options, topic and group helpers."""

    settings: KafkaSettings
    broker: EmbeddedBroker | None = None
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap_servers

    def unique(self, stem: str = "t") -> str:
        return f"{stem}-{next(self._counter)}-{uuid.uuid4().hex[:8]}"

    def group_id(self, stem: str = "group") -> str:
        return self.unique(stem)

    def create_topics(self, *names: str, partitions: int = 1) -> dict[str, int]:
        return ensure_topics(self.settings, names, num_partitions=partitions, require_equal=False)

    def new_topic(self, stem: str = "topic", partitions: int = 1) -> str:
        name = self.unique(stem)
        self.create_topics(name, partitions=partitions)
        return name

    def producer(self, **overrides):
        return Producer(self.settings.producer(**overrides))

    def consumer(self, group_id: str | None = None, offset_reset: str = "earliest", **overrides):
        return Consumer(self.settings.consumer(group_id or self.group_id(), offset_reset=offset_reset,
                                               **overrides))


def start_test_kafka() -> KafkaTestEnv:
    external = os.environ.get(TEST_KAFKA_ENV)
    if external:
        return KafkaTestEnv(settings=KafkaSettings(bootstrap_servers=external))
    broker = EmbeddedBroker().start()
    return KafkaTestEnv(settings=KafkaSettings(bootstrap_servers=broker.bootstrap), broker=broker)
