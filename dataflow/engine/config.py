"""Engine configuration: who this replica is, where the scheduler and Kafka are, how pipelines run.

Defaults follow the reference engine's configuration. Runtime default ``kafka`` (the raw confluent-kafka loop):
it measured ~1.5x the batched Faust runtime's msg/s per core on chain and join steps, with lower
latency and no process per pipeline (benchmarks/README.md).
"""
from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass, field

from dataflow.kafka import KafkaSettings, KafkaSetupError, TopicNamer
from dataflow.runtime.base import RuntimeConfig

RUNTIMES = ("kafka", "faust")
DEFAULT_RUNTIME = "kafka"
DEFAULT_SCHEDULER = "127.0.0.1:9008"


class ConfigError(ValueError):
    """An engine setting is invalid; the message names the setting and the bad value."""


def default_replica_name() -> str:
    """Stable per host (the reference uses the hostname); unique fallback if there is none."""
    try:
        name = socket.gethostname()
    except OSError:
        name = ""
    return name or f"seldon-dataflow-engine-{uuid.uuid4()}"


def parse_host_port(value: str, setting: str = "scheduler") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{setting} must be HOST:PORT, got {value!r}")
    return host, int(port)


@dataclass
class EngineConfig:
    replica_name: str = field(default_factory=default_replica_name)
    scheduler: str = DEFAULT_SCHEDULER            # chainer endpoint HOST:PORT (reference port 9008)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    runtime: str = DEFAULT_RUNTIME
    partitions: int = 1
    replication_factor: int = 1
    state_dir: str = "/tmp/dataflow-engine/state"
    join_window_ms: int = 60_000
    consumer_prefix: str = ""
    namespace: str = ""
    topic_prefix: str = "seldon"                  # topic names come from the scheduler; validated only
    exactly_once: bool = False
    commit_interval_ms: int = 1_000
    max_message_bytes: int = 1_000_000_000
    ctlops_parallelism: int = 8                   # pipeline.ctlops.threads
    health_port: int | None = None                # /live /ready /startup; None = off
    pipeline_factory: str | None = None           # "module:callable" override (tests, experiments)
    schema_registry_config: str | None = None     # .confluent-schema.yaml (or its directory); None = no framing

    def __post_init__(self) -> None:
        parse_host_port(self.scheduler)
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {self.partitions}")
        if self.join_window_ms < 1:
            raise ConfigError(f"join window must be >= 1 ms, got {self.join_window_ms}")
        if not self.replica_name:
            raise ConfigError("replica name must not be empty")
        try:
            TopicNamer(prefix=self.topic_prefix, namespace=self.namespace or "default")
        except KafkaSetupError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def scheduler_target(self) -> str:
        return self.scheduler

    @property
    def replica_state_dir(self) -> str:
        """``<state_dir>/<replica name>``: two replicas sharing a state dir (same host) never open the
        same RocksDB, and a replica restarted under its name finds its state again."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.replica_name)
        return os.path.join(os.path.abspath(self.state_dir), safe)

    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig(
            kafka=self.kafka, consumer_prefix=self.consumer_prefix, namespace=self.namespace,
            partitions=self.partitions, replication_factor=self.replication_factor,
            max_message_bytes=self.max_message_bytes, join_window_ms=self.join_window_ms,
            state_dir=self.replica_state_dir, exactly_once=self.exactly_once,
            commit_interval_ms=self.commit_interval_ms, replica_id=self.replica_name,
            schema_registry_config=self.schema_registry_config,
        )
