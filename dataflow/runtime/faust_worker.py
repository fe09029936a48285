"""The Faust worker process of one pipeline version: ``python -m dataflow.runtime.faust_worker``.

Why a process per version: a Faust App is one consumer group with process-wide machinery (its
event loop, signal handlers, web port, a consumer thread); running many in one process and
adding/removing them at run time is fragile. A process per version starts and stops without
touching the others, and a crash takes down only its own pipeline.

Protocol with the parent (``FaustRunner``):

* stdin: one JSON object (the ``WorkerSpec``: base64 ``PipelineUpdateMessage``, runtime config,
  topic partition counts, web port, pipeline factory), then EOF;
* stdout: JSON lines ``{"state": "RUNNING|REBALANCING|ERROR|STOPPED", "reason": "..."}``; any
  other output (logs, stray prints) goes to stderr;
* SIGTERM: stop gracefully (commit, leave the group); the process also dies with its parent
  (``PR_SET_PDEATHSIG`` plus a parent-pid watchdog), since an engine killed with SIGKILL must not
  leave orphan consumers in the group.

The pipeline runs as partition tasks (``dataflow.runtime.tasks``), driven by
``faust_tasks.TaskDriver``: a task per assigned source partition, its state restored from the
version's changelog topic before its processors are built, checkpointed at every Faust offset
commit, saved and closed on revocation; the same semantics as ``KafkaRunner``. Per record: build
a ``Record``, run it through the task of its partition, hand the outputs to the producer without
awaiting delivery and acknowledge it (every commit first flushes the producer, which keeps
at-least-once). A timer punctuates every task every ``punctuate_interval_ms``. A record that
makes ``process`` raise is logged with topic/partition/offset and skipped; it never stops the
worker.
"""
from __future__ import annotations

import asyncio
import base64
import cProfile
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from chainer_api import chainer_pb2
from dataflow import processes
from dataflow.kafka import KafkaSettings, partition_for_key
from dataflow.records import Record, record_from_event
from dataflow.runtime import gc_tuning
from dataflow.runtime.base import RuntimeConfig
from dataflow.runtime.tasks import PartitionTasks, probe
from dataflow.schema_registry import framer_for
from dataflow.state.partition import rocks_partition_state
from dataflow.topology import compile_pipeline
from dataflow.topology.compiled import aligned_topics
from dataflow.topology.settings import TopologySettings

if TYPE_CHECKING:  # only named in annotations; Faust is imported where the worker builds its app
    import faust
    from aiokafka import AIOKafkaProducer
    from faust.transport.drivers.aiokafka import Producer as AIOKafkaFaustProducer

    from dataflow.runtime.faust_fastpath import BatchProcessor
    from dataflow.runtime.kafka_runtime import PipelineFactory
    from dataflow.state.base import StoreFactory
    from dataflow.state.partition import PartitionState
    from dataflow.topology.compiled import CompiledPipeline

log = logging.getLogger("dataflow.runtime.faust_worker")

DEFAULT_FACTORY = "dataflow.runtime.faust_worker:compile_with_topology"
REASON_WORKER_FAILED = "kafka streams: failed to start"
PROFILE_ENV = "DATAFLOW_FAUST_PROFILE"  # file to write cProfile stats of the worker to (benchmarks)


# ---------------------------------------------------------------------------------------------
# The spec the parent sends
# ---------------------------------------------------------------------------------------------


@dataclass
class WorkerSpec:
    msg_b64: str
    group_id: str
    partitions: dict[str, int]
    web_port: int
    parent_pid: int
    factory: str = DEFAULT_FACTORY
    kafka: dict[str, Any] = field(default_factory=dict)     # KafkaSettings fields
    config: dict[str, Any] = field(default_factory=dict)    # RuntimeConfig fields except kafka
    log_level: str = "WARNING"
    path: str = "batch"                                     # "batch" (faust_fastpath) or "agent"
    changelog_topic: str | None = None                      # created by the parent; None: stateless

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


def kafka_settings_to_dict(settings: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap_servers": settings.bootstrap_servers, "extra": [list(kv) for kv in settings.extra],
            "session_timeout_ms_override": settings.session_timeout_ms,
            "fetch_wait_max_ms_override": settings.fetch_wait_max_ms}


def kafka_settings_from_dict(data: dict[str, Any]) -> KafkaSettings:
    data = dict(data)
    data["extra"] = tuple(tuple(kv) for kv in data.get("extra", ()))
    return KafkaSettings(**data)


def runtime_config_to_dict(config: RuntimeConfig) -> dict[str, Any]:
    out = asdict(config)
    out.pop("kafka", None)
    return out


def runtime_config_from_spec(spec: WorkerSpec) -> RuntimeConfig:
    return RuntimeConfig(kafka=kafka_settings_from_dict(spec.kafka), **spec.config)


# ---------------------------------------------------------------------------------------------
# Pipeline factories
# ---------------------------------------------------------------------------------------------


def compile_with_topology(msg: chainer_pb2.PipelineUpdateMessage, config: RuntimeConfig,
                          store_factory: StoreFactory) -> CompiledPipeline:
    """Default factory: the shared step semantics in ``dataflow.topology``."""
    settings = TopologySettings(default_join_window_ms=config.join_window_ms)
    return compile_pipeline(msg, store_factory=store_factory, settings=settings)


def load_factory(path: str) -> PipelineFactory:
    """``"package.module:callable"`` -> the callable ``(msg, config, store_factory) -> pipeline``."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"pipeline factory {path!r} must look like 'package.module:callable'")
    factory: PipelineFactory = getattr(importlib.import_module(module_name), attr)
    return factory


# ---------------------------------------------------------------------------------------------
# Parent death
# ---------------------------------------------------------------------------------------------


def die_with_parent(parent_pid: int) -> None:
    """Kill this process when the parent goes away (SIGKILL of the engine included)."""
    processes.die_with_parent(signal.SIGKILL)
    if os.getppid() != parent_pid:  # parent died before prctl took effect
        os._exit(70)

    def watch() -> None:  # PDEATHSIG follows the parent *thread*; also watch the pid
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(70)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


class StateReporter:
    """Writes the JSON state lines the parent reads; thread-safe, never raises."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._lock = threading.Lock()
        self.last: str | None = None

    def __call__(self, state: str, reason: str = "") -> None:
        with self._lock:
            if state == self.last and state != "ERROR":
                return
            self.last = state
            try:
                self._stream.write(json.dumps({"state": state, "reason": reason}) + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass


# ---------------------------------------------------------------------------------------------
# The processing loop
# ---------------------------------------------------------------------------------------------


class PipelineWorker:
    """Wires one pipeline version into a Faust app: partition tasks, agent, timer, state hooks."""

    def __init__(self, spec: WorkerSpec, report: StateReporter):
        # imported here: the engine imports this module for WorkerSpec, and Faust adds ~30 MB to its RSS
        from dataflow.runtime.faust_app import build_app
        from dataflow.runtime.faust_tasks import TaskDriver

        self.spec = spec
        self.report = report
        self.msg = chainer_pb2.PipelineUpdateMessage.FromString(base64.b64decode(spec.msg_b64))
        self.config = runtime_config_from_spec(spec)
        self.partitions = dict(spec.partitions)
        self.default_partitions = max(self.partitions.values(), default=self.config.partitions)
        self.datadir = Path(self.config.state_dir) / spec.group_id
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.app = build_app(group_id=spec.group_id, settings=self.config.kafka,
                             partitions=self.default_partitions, datadir=self.datadir,
                             web_port=spec.web_port, exactly_once=self.config.exactly_once,
                             commit_interval_ms=self.config.commit_interval_ms,
                             replication_factor=self.config.replication_factor,
                             max_message_bytes=self.config.max_message_bytes)
        factory = load_factory(spec.factory)

        def build(store_factory: StoreFactory) -> CompiledPipeline:
            return factory(self.msg, self.config, store_factory)

        probed, stateful = probe(build)  # compiles once: validates and tells the source topics
        self.sources = sorted(probed.source_topics)
        self.aligned = aligned_topics(probed)
        self.tasks = PartitionTasks(build, self._open_state if stateful else None)
        self.driver = TaskDriver(self.app, self.tasks, source_topics=self.sources, settings=self.config.kafka,
                                 changelog_topic=spec.changelog_topic, exactly_once=self.config.exactly_once,
                                 on_fatal=lambda reason: self.report("ERROR", reason))
        if self.config.exactly_once or stateful:
            # Faust's own partition assignor: it assigns partition p of every source topic to the
            # same worker (one topic group), which a task's state needs; without tables or
            # standbys Faust uses round robin, which splits them. Faust's transactions also look
            # topic groups up in it. A standby setting with no tables has nothing to replicate.
            self.app.conf.table_standby_replicas = 1
        self._running_once = False
        self._ready_task: asyncio.Task[None] | None = None

        self.framer = framer_for(self.config.schema_registry_config, validate=False)
        self._wire()
        self.driver.install()

    def _open_state(self, partition: int) -> PartitionState:
        return rocks_partition_state(str(self.datadir), partition)

    # -- wiring ------------------------------------------------------------------------------
    def _wire(self) -> None:
        app = self.app
        topic = app.topic(*self.sources, key_type=bytes, value_type=bytes, key_serializer="raw",
                          value_serializer="raw", allow_empty=True, partitions=self.default_partitions)
        # The agent subscribes the source topics (and enables acks for them) in both paths; with
        # the batch path its stream stays empty because the fetch loop hands records over directly.
        app.agent(topic, name=f"{self.spec.group_id}-pipeline")(self._agent)
        self.batch_producer = None
        self.batch_processor: BatchProcessor | None = None
        # Exactly-once stays on the agent path: its sends take Faust's per-transaction locks, which
        # keeps them out of the window between a transaction's commit and the next begin.
        if self.spec.path == "batch" and not self.config.exactly_once:
            # imported here: the engine imports this module for WorkerSpec, and Faust adds ~30 MB to its RSS
            from dataflow.runtime.faust_fastpath import BatchProcessor, BatchProducer, install_batch_drain

            self.batch_producer = BatchProducer(app, self.partitions, self.default_partitions,
                                                framer=self.framer)
            self.batch_processor = BatchProcessor(app, self.tasks, self.driver.lock, self.batch_producer,
                                                  self.aligned)
            install_batch_drain(app, self.sources, self.batch_processor)
        elif self.spec.path not in ("batch", "agent"):
            raise ValueError(f"unknown processing path {self.spec.path!r} (expected 'batch' or 'agent')")
        app.timer(max(self.config.punctuate_interval_ms, 1) / 1000.0, on_leader=False)(self._tick)

        original_start, original_end = app.on_rebalance_start, app.on_rebalance_end

        def on_rebalance_start() -> None:
            original_start()
            if self.batch_processor is not None:   # held records are read again once assigned
                self.batch_processor.drop_held()
            if self._running_once:
                self.report("REBALANCING")

        def on_rebalance_end() -> None:
            original_end()
            if self._ready_task is not None:
                self._ready_task.cancel()
            self._ready_task = asyncio.ensure_future(self._report_ready())

        app.on_rebalance_start = on_rebalance_start  # type: ignore[method-assign]  # wrapping faust's hooks
        app.on_rebalance_end = on_rebalance_end  # type: ignore[method-assign]

    async def _report_ready(self) -> None:
        """RUNNING once every owned source partition has a resolved position (this runs at the
        end of a rebalance, so the partitions' tasks are restored and built by then).

        With ``latest`` a partition without committed offsets is positioned lazily; resolving it
        here means a record produced after ``start()`` returned is never skipped.
        """
        consumer = self.app.consumer
        try:
            for tp in sorted(consumer.assignment()):
                if tp.topic in self.sources:
                    await consumer.position(tp)
            # Warm the producer's metadata for every sink so the first outputs do not wait for it.
            producer = cast("AIOKafkaFaustProducer", self.app.producer)._producer  # the aiokafka transport
            assert producer is not None  # the app is running
            for topic in sorted(self.partitions):
                await producer.partitions_for(topic)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            log.warning("could not resolve start positions: %s", exc)
        if not self.app.rebalancing and self.driver.fatal_reason is None:
            self._running_once = True
            self.report("RUNNING")

    # -- per record ----------------------------------------------------------------------------
    def _producer(self) -> AIOKafkaProducer:
        return cast("AIOKafkaFaustProducer", self.app.producer)._producer  # the aiokafka producer (at-least-once path)

    async def _produce(self, records: list[Record], source_partition: int | None = None) -> None:
        if self.batch_producer is not None:  # frames the values itself; at-least-once only
            await self.batch_producer.send(records)
            return
        if self.framer is not None:  # schema-registry framing
            records = [r.evolve(value=await self.framer.aframe(r.topic, r.value)) for r in records]
        if self.config.exactly_once:
            for out in records:
                await self._produce_transactional(out, source_partition)
            return
        producer = self._producer()
        for out in records:
            partition = partition_for_key(out.key, self.partitions.get(out.topic, self.default_partitions))
            fut = await producer.send(out.topic, out.value,
                                      key=out.key.encode() if out.key is not None else None,
                                      partition=partition, timestamp_ms=out.timestamp or None,
                                      headers=list(out.headers))
            fut.add_done_callback(self._on_delivery)

    async def _produce_transactional(self, out: Record, source_partition: int | None) -> None:
        """Send ``out`` inside the Kafka transaction of the source partition it came from.

        Faust keeps one transactional producer per assigned source partition and commits that
        partition's input offsets in it, so outputs sent there commit atomically with the input.
        (Faust's own ``transactions.send`` picks the transaction by the *output* partition and
        only knows subscribed topics, which does not fit sinks like ``model.x.inputs``.)
        Punctuation outputs go into the transaction of the task that punctuated; the checkpoint
        puts that partition's changelog records in the same transaction.
        """
        partition = partition_for_key(out.key, self.partitions.get(out.topic, self.default_partitions))
        source = source_partition if source_partition is not None else partition
        transactional_id = self.driver.transactional_id(source)
        # Faust converts seconds back with int(ts * 1000); +0.5 ms keeps the millisecond exact.
        timestamp = (out.timestamp + 0.5) / 1000.0 if out.timestamp else None
        fut = await self.app.producer.send(
            out.topic, out.key.encode() if out.key is not None else None, out.value,
            partition, timestamp, list(out.headers), transactional_id=transactional_id)
        fut.add_done_callback(self._on_delivery)  # type: ignore[attr-defined]  # a Future; faust says Awaitable

    def _on_delivery(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("produce failed: %s", fut.exception())

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        tasks, lock = self.tasks.tasks, self.driver.lock
        async for event in stream.events():
            message = event.message
            async with lock:  # process, produce and ack in one step (see faust_tasks)
                task = tasks.get(message.partition)
                if task is None:  # revoked meanwhile: its new owner processes it
                    log.warning("record %s[%s]@%s of a partition without a task; not processed",
                                message.topic, message.partition, message.offset)
                    continue
                try:
                    outputs = task.process(record_from_event(message), int(time.time() * 1000))
                except Exception:
                    log.exception("record %s[%s]@%s failed; skipped", message.topic, message.partition,
                                  message.offset)
                    outputs = []
                if outputs:
                    await self._produce(outputs, message.partition)
                event.ack()

    async def _tick(self) -> None:
        if self.app.rebalancing:
            return
        async with self.driver.lock:
            now_ms = int(time.time() * 1000)
            for task in list(self.tasks.tasks.values()):
                try:
                    outputs = task.punctuate(now_ms)
                except Exception:
                    log.exception("punctuate of partition %d failed; will retry on the next tick", task.partition)
                    continue
                if outputs:
                    await self._produce(outputs, task.partition)

    # -- run -----------------------------------------------------------------------------------
    def run(self) -> int:
        # imported here: the engine imports this module for WorkerSpec, and Faust adds ~30 MB to its RSS
        import faust

        worker = faust.Worker(self.app, loglevel=self.spec.log_level, quiet=True,
                              redirect_stdouts=False, override_logging=False)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
        self.driver.close()
        self.crash_reason = worker.crash_reason or self.app.crash_reason
        starting = getattr(worker, "_starting_fut", None)  # start-up errors end here, not in crash_reason
        if self.crash_reason is None and starting is not None and starting.done() and not starting.cancelled():
            self.crash_reason = starting.exception()
        return code

    def failure_reason(self, code: int) -> str:
        """Why the worker ended with ``code``: the crash exception, with a hint for known causes."""
        if self.driver.fatal_reason:
            return self.driver.fatal_reason
        exc = getattr(self, "crash_reason", None)
        if exc is None:
            return f"faust worker exited with code {code}"
        text = f"{type(exc).__name__}: {exc}"
        if self.config.exactly_once and "UnknownError" in text:
            text += " (exactly_once: the broker rejected a transactional producer request such as InitProducerId)"
        return f"{REASON_WORKER_FAILED} Exception: {text}"


def main(argv: list[str] | None = None) -> int:
    state_stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr
    report = StateReporter(state_stream)
    try:
        spec = WorkerSpec.from_json(sys.stdin.read())
    except (ValueError, TypeError) as exc:
        report("ERROR", f"bad worker spec: {exc}")
        return 2
    die_with_parent(spec.parent_pid)
    gc_tuning.tune()
    logging.basicConfig(level=spec.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s faust-worker[%(process)d] %(name)s: %(message)s")
    try:
        worker = PipelineWorker(spec, report)
    except Exception as exc:
        log.exception("cannot build the pipeline")
        report("ERROR", f"failed to initialize faust worker for pipeline Exception: {exc}")
        return 3
    profile_path = os.environ.get(PROFILE_ENV)
    if profile_path:  # benchmarks: profile the whole worker, dump on exit
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            code = worker.run()
        finally:
            profiler.disable()
            profiler.dump_stats(profile_path)
    else:
        code = worker.run()
    if code or worker.driver.fatal_reason:
        report("ERROR", worker.failure_reason(code))
    report("STOPPED")
    return code


if __name__ == "__main__":
    sys.exit(main())
