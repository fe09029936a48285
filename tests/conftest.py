"""Shared fixtures: one Kafka per test session (embedded Tansu unless DATAFLOW_TEST_KAFKA is set)."""
from __future__ import annotations

import pytest

from dataflow_testing.kafka_env import KafkaTestEnv, start_test_kafka


@pytest.fixture(scope="session")
def kafka() -> KafkaTestEnv:
    env = start_test_kafka()
    try:
        yield env
    finally:
        if env.broker is not None:
            env.broker.stop()
