"""The runner seam: what the engine needs from any runtime to run one pipeline version.

The engine (Chainer client + lifecycle) creates one runner per pipeline version uid, awaits
``start()`` until the consumer group has its partitions (the scheduler is acked a Create only once
its version is RUNNING), reports later state changes from ``on_state`` as Rebalance / Ready acks,
and awaits ``stop()`` on Delete. Runners must not block the event loop.
"""
from __future__ import annotations

import enum
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from chainer_api import chainer_pb2
from dataflow.kafka import KafkaSettings


class RunnerState(str, enum.Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    REBALANCING = "REBALANCING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    ERROR = "ERROR"


class RunnerError(RuntimeError):
    """A pipeline could not be started or failed while running; the message is the ack reason."""


@dataclass
class RuntimeConfig:
    """Settings every runtime honours. Defaults follow the reference engine's configuration
    except where the embedded broker needs shorter timeouts (docs/embedded-broker.md)."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    consumer_prefix: str = ""          # kafka.consumer.prefix
    namespace: str = ""                # pod namespace (used in group ids only)
    partitions: int = 1                # kafka.partitions.default for created topics
    replication_factor: int = 1
    max_message_bytes: int = 1_000_000_000
    join_window_ms: int = 60_000       # kafka.join.window.millis
    state_dir: str = "/tmp/dataflow-engine/state"
    exactly_once: bool = False
    commit_interval_ms: int = 1_000
    # Stateful versions also checkpoint after this many input records: it bounds the state
    # written to the database (and the time the loop spends writing it) in one checkpoint.
    commit_every: int = 5_000
    punctuate_interval_ms: int = 100
    start_timeout_s: float = 60.0
    state_changelog: bool = True       # back stateful versions with <group>-state-changelog
    # Who runs the pipeline: part of the exactly-once transactional.id, so that a restarted
    # replica fences its predecessor's open transaction. Empty: the host name.
    replica_id: str = ""
    # Confluent Schema Registry config (a directory holding .confluent-schema.yaml, or the file):
    # values written to *.inputs / *.outputs sinks get the registry's wire framing. None: off.
    schema_registry_config: str | None = None
    # Threads that poll every version's consumer (shared by the process; see runtime.poll_loops).
    poll_threads: int = 2
    # Time each step per record for the step latency metric (TopologySettings.step_latency).
    step_latency: bool = True

    @property
    def transactional_replica(self) -> str:
        return self.replica_id or socket.gethostname()


StateCallback = Callable[[RunnerState, str], None]


class PipelineRunner(ABC):
    """Runs one pipeline version (one consumer group) until stopped."""

    def __init__(self, msg: chainer_pb2.PipelineUpdateMessage, config: RuntimeConfig,
                 on_state: StateCallback | None = None):
        self.msg = msg
        self.config = config
        self.on_state = on_state or (lambda state, reason: None)
        self.state = RunnerState.STARTING

    @property
    def uid(self) -> str:
        return self.msg.uid

    def _set_state(self, state: RunnerState, reason: str = "") -> None:
        if state != self.state:
            self.state = state
            self.on_state(state, reason)

    @abstractmethod
    async def start(self) -> None:
        """Create topics, start consuming; return once RUNNING or raise ``RunnerError``."""

    async def launch(self) -> None:
        """The part of ``start`` that works (topics, clients); ``wait_running`` then only waits.
        The engine bounds how many versions launch at once, not how many wait for their group
        (a wait costs nothing, and on a slow group join bounding it serialised the starts)."""
        await self.start()

    async def wait_running(self) -> None:  # noqa: B027  # optional hook: runners that start synchronously have nothing to wait for
        """After ``launch``: return once RUNNING or raise ``RunnerError``."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop consuming and producing, flush, release resources; idempotent."""
