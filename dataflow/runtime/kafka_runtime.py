"""The hot-path runtime: a confluent-kafka consume -> process -> produce cycle per pipeline version.

Why a raw loop: on this machine a batched confluent-kafka loop does ~169k msg/s per core while
Faust's per-record path tops out near 6k (benchmarks/FAUST_PROFILE.md), so this is the default runtime.

Each runner has one consumer in the version's group (a new version starts at ``latest``, all
replicas share the group and split partitions), driven by one of the process's few poll threads
(``dataflow.runtime.poll_loops``: no thread per version, and the asyncio engine loop never
blocks); at-least-once runners share the process's producer (``dataflow.runtime.producers``),
exactly-once runners have their own. On the embedded broker an idle consumer is parked
(``dataflow.kafka_parking``) so that idle versions cost the broker nothing.

Records are processed by partition tasks (``dataflow.runtime.tasks``): a task per assigned
partition, whose state is restored from the version's changelog before its processors are built.
Stateless versions have tasks without state, no changelog topic and no restore.

Checkpoint (every ``commit_interval_ms``; for stateful versions also every ``commit_every``
records, so that a backlog never piles up one huge write; on revoke and on stop), in this order:

* at-least-once (default): produce the tasks' state changes to the changelog -> flush the producer
  (outputs and changelog delivered) -> commit input offsets -> apply each task's write buffer to
  its database in one batch. A failed delivery rolls the tasks back to their last checkpoint and
  rewinds the consumer: inputs are processed again (duplicates, never loss).
* exactly-once (``RuntimeConfig.exactly_once``): outputs, changelog records and input offsets go
  in one Kafka transaction; the write buffers are applied only after it commits and dropped if it
  aborts. The ``transactional.id`` is stable per replica and version, so a restarted replica
  fences its predecessor (with consumer-group metadata fencing, KIP-447).

State reports (``on_state``) are delivered on the event loop that called ``start()``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from chainer_api import chainer_pb2
from dataflow import kafka_parking, schema_registry
from dataflow.headers import in_shape, normalise
from dataflow.kafka import GroupJoin, KafkaSettings, dataflow_group_id, ensure_topics, partition_for_key, poll_batch
from dataflow.kafka_produce import produce
from dataflow.records import Record
from dataflow.runtime import changelog as cl
from dataflow.runtime import poll_loops, producers
from dataflow.runtime.alignment import TimestampAligner
from dataflow.runtime.base import PipelineRunner, RunnerError, RunnerState, RuntimeConfig, StateCallback
from dataflow.runtime.tasks import BuildPipeline, OpenState, PartitionTasks, probe
from dataflow.state.base import StoreFactory
from dataflow.state.partition import PartitionState, memory_partition_state, rocks_partition_state
from dataflow.topology import compile_pipeline
from dataflow.topology.compiled import CompiledPipeline, DirectSource, aligned_topics, direct_routes
from dataflow.topology.stats import StepSnapshot

if TYPE_CHECKING:  # only named in annotations
    from confluent_kafka import Message

log = logging.getLogger(__name__)

# Reasons are the reference engine's status texts, which the scheduler shows as the version's
# reason: "<message> Exception: <detail>".
REASON_INIT_FAILED = "failed to initialize kafka streams for pipeline"
REASON_TOPICS_FAILED = "kafka streams topic creation error"
REASON_START_FAILED = "kafka streams: failed to start"
REASON_RESTORE_FAILED = "kafka streams: state restore from changelog failed"

CONSUME_BATCH = 1000
# Delivery failures that librdkafka reports as not retriable although the record may well be
# written on another try: a record that timed out in the producer (the broker was unreachable or
# too slow for message.timeout.ms; librdkafka's own retries are over) was never written, so the
# checkpoint must not commit past it: its input is processed again, as for a retriable failure.
REDELIVERABLE = frozenset({KafkaError._MSG_TIMED_OUT})
STOP_TIMEOUT_S = 30.0

# (msg, config, store_factory) -> CompiledPipeline; the default compiles with dataflow.topology.
PipelineFactory = Callable[[chainer_pb2.PipelineUpdateMessage, RuntimeConfig, StoreFactory], CompiledPipeline]


def with_exception(message: str, exc: BaseException) -> str:
    return f"{message} Exception: {exc}"


def compile_with_topology(msg: chainer_pb2.PipelineUpdateMessage, config: RuntimeConfig,
                          store_factory: StoreFactory) -> CompiledPipeline:
    """Default ``PipelineFactory``: the shared step semantics in ``dataflow.topology``."""
    return compile_pipeline(msg, store_factory=store_factory, settings=config)


class KafkaRunner(PipelineRunner):
    """Runs one ``CompiledPipeline`` with confluent-kafka in a dedicated thread."""

    def __init__(self, msg: chainer_pb2.PipelineUpdateMessage, config: RuntimeConfig,
                 on_state: StateCallback | None = None, *,
                 pipeline_factory: PipelineFactory | None = None,
                 memory_state: bool = False):
        """``memory_state`` keeps partition state in memory instead of RocksDB (tests)."""
        super().__init__(msg, config, on_state)
        self._pipeline_factory = pipeline_factory or compile_with_topology
        self._memory_state = memory_state
        self._stop = threading.Event()
        self._driver: RunnerLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.group_id = dataflow_group_id(msg.uid, config.consumer_prefix, config.namespace)
        self.changelog_topic = cl.changelog_topic(self.group_id) if config.state_changelog else None
        self.record_filters: dict[str, frozenset[bytes]] | None = None   # set by _prepare
        self.aligned_topics: tuple[frozenset[str], ...] = ()   # set by _prepare
        self.stats = {"consumed": 0, "produced": 0, "failed": 0, "commits": 0, "restored": 0}

    def step_totals(self) -> dict[str, StepSnapshot]:
        """Per-step counters and buffered state of this version's partition tasks, read by the
        engine's metrics on scrape (``dataflow.runtime.tasks.PartitionTasks.step_totals``)."""
        driver = self._driver
        return driver.tasks.step_totals() if driver is not None else {}

    def assigned_partitions(self) -> int:
        driver = self._driver
        return len(driver.tasks.tasks) if driver is not None else 0

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet processed per assigned source partition: the high watermark librdkafka
        last saw in a fetch (no broker call) minus the next offset to process. A parked consumer
        fetches nothing, so its lag shows 0 until it is woken (at once, when records arrive)."""
        driver = self._driver
        consumer = driver.consumer if driver is not None else None
        if consumer is None or driver is None or driver.closing:   # never race the consumer's close
            return {}
        positions = {**driver.committed, **driver.offsets}
        out: dict[tuple[str, int], int] = {}
        try:
            for (topic, partition), position in list(positions.items()):
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                if high >= 0 and position >= 0:
                    out[(topic, partition)] = max(0, high - position)
        except Exception:
            return {}
        return out

    # ---------------------------------------------------------------- asyncio side

    @property
    def state_dir(self) -> str:
        return os.path.join(self.config.state_dir, self.msg.uid)

    async def start(self) -> None:
        await self.launch()
        await self.wait_running()

    async def launch(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._stopped = self._loop.create_future()
        try:
            tasks, partitions, sources = await asyncio.to_thread(self._prepare)
        except Exception as exc:
            error = exc if isinstance(exc, RunnerError) else RunnerError(with_exception(REASON_INIT_FAILED, exc))
            self._set_state(RunnerState.ERROR, str(error))
            self._stopped.set_result(None)
            raise error from None
        self._driver = RunnerLoop(self, tasks, partitions, sources)
        poll_loops.shared(self.config.poll_threads).add(self._driver)

    async def wait_running(self) -> None:
        assert self._started is not None  # set by launch()
        try:
            await asyncio.wait_for(asyncio.shield(self._started), self.config.start_timeout_s)
        except TimeoutError:
            await self.stop()
            raise RunnerError(f"{REASON_START_FAILED} Exception: no partitions assigned within "
                              f"{self.config.start_timeout_s:g}s") from None

    async def stop(self) -> None:
        self._stop.set()
        driver = self._driver
        if driver is not None:
            driver.wake()
        if self._stopped is not None and driver is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._stopped), STOP_TIMEOUT_S)
            except TimeoutError:  # e.g. a client close stuck on a wedged group: do not hang the engine
                log.error("pipeline %s (%s) did not stop within %ss; abandoning it",
                          self.msg.pipeline, self.uid, STOP_TIMEOUT_S)

    async def clean_state(self) -> None:
        """Remove this version's state directory (after ``stop()``, when the pipeline is deleted)."""
        await asyncio.to_thread(shutil.rmtree, self.state_dir, True)

    def _report(self, state: RunnerState, reason: str = "") -> None:
        """Thread -> loop: state changes are applied and reported on the event loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._set_state, state, reason)

    def _resolve(self, fut: asyncio.Future[None] | None, exc: BaseException | None = None) -> None:
        def done() -> None:
            if fut is not None and not fut.done():
                fut.set_exception(exc) if exc else fut.set_result(None)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(done)

    # ---------------------------------------------------------------- poll thread

    def _build(self, store_factory: StoreFactory) -> CompiledPipeline:
        return self._pipeline_factory(self.msg, self.config, store_factory)

    def _open_state(self, partition: int) -> PartitionState:
        if self._memory_state:
            return memory_partition_state(partition)
        return rocks_partition_state(self.state_dir, partition)

    def _prepare(self) -> tuple[PartitionTasks, dict[str, int], frozenset[str]]:
        """Compile once (validates the message, tells the topics and whether there is state) and
        create the topics; partition tasks are built later, per assigned partition."""
        build: BuildPipeline = self._build
        try:
            probed, stateful = probe(build)
        except Exception as exc:
            raise RunnerError(with_exception(REASON_INIT_FAILED, exc)) from exc
        if not (stateful and self.config.state_changelog):
            self.changelog_topic = None
        try:
            partitions = ensure_topics(
                self.config.kafka, probed.all_topics, self.config.partitions,
                self.config.replication_factor, require_equal=True,
                topic_config={"max.message.bytes": str(self.config.max_message_bytes)},
            )
            if self.changelog_topic:  # one changelog partition per source partition
                n = max(partitions.values(), default=self.config.partitions)
                partitions.update(ensure_topics(
                    self.config.kafka, [self.changelog_topic], n, self.config.replication_factor,
                    topic_config={"max.message.bytes": str(self.config.max_message_bytes), **cl.TOPIC_CONFIG}))
                if partitions[self.changelog_topic] != n:
                    raise RuntimeError(f"changelog topic {self.changelog_topic} has "
                                       f"{partitions[self.changelog_topic]} partitions, the pipeline's topics {n}")
        except Exception as exc:  # KafkaSetupError, or the admin client's own errors
            raise RunnerError(with_exception(REASON_TOPICS_FAILED, exc)) from exc
        open_state: OpenState | None = None
        if stateful:
            os.makedirs(self.state_dir, exist_ok=True)
            open_state = self._open_state
        # Which records matter to this version, so that a parked consumer is not woken for the
        # other pipelines' records on a shared model topic (a pipeline type without the method:
        # every record matters).
        filters = getattr(probed, "record_filters", None)
        self.record_filters = filters() if filters is not None else None
        self.aligned_topics = aligned_topics(probed)
        return PartitionTasks(build, open_state), partitions, probed.source_topics


def _describe(m: Message) -> tuple[str, int, int]:
    """A consumed record's (topic, partition, timestamp) for the aligner."""
    return m.topic(), m.partition(), m.timestamp()[1]  # type: ignore[return-value]  # set on records without an error


class RunnerLoop:
    """The consume -> process -> produce -> checkpoint cycle of one runner: a poll-loop driver.

    Every method runs on the poll thread that drives it (``dataflow.runtime.poll_loops``)."""

    def __init__(self, runner: KafkaRunner, tasks: PartitionTasks, partitions: dict[str, int],
                 source_topics: frozenset[str]):
        self.runner = runner
        self.name = f"pipeline {runner.msg.pipeline} ({runner.uid})"
        self.tasks = tasks
        self.source_topics = source_topics
        self.partitions = dict(partitions)
        cfg = runner.config
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.spot: kafka_parking.Spot | None = None  # parking place on the embedded broker (kafka_parking)
        self._thread_wake: threading.Event | None = None  # the poll thread's wake event
        self.eos = cfg.exactly_once
        self.in_txn = False
        self.commit_interval = cfg.commit_interval_ms / 1000.0
        self.commit_every = cfg.commit_every
        self.punctuate_interval = cfg.punctuate_interval_ms / 1000.0
        self.offsets: dict[tuple[str, int], int] = {}  # next offset to commit per partition
        self.dirty = False
        self.retriable_failures = 0
        self.committed: dict[tuple[str, int], int] = {}  # last committed / start offset per partition
        self.assigned_once = False
        self.changelog_topic = runner.changelog_topic if tasks.stateful else None
        self.restore_error: str | None = None
        self.last_records_at = 0.0
        self.closing = False
        self.join: GroupJoin | None = None  # never leave the group mid-join (see ``close``)
        self.next_commit = self.next_punctuate = 0.0
        self.since_commit = 0
        # Records of the topics that meet in a join go to the steps in record-time order.
        self.aligner: TimestampAligner[Message] | None = \
            TimestampAligner(runner.aligned_topics, _describe) if runner.aligned_topics else None
        # (topic, value) -> value with schema-registry framing, or None when that is off. The
        # values are the codec's own serialisations, so they are not parsed again to check them.
        framer = schema_registry.framer_for(cfg.schema_registry_config, validate=False)
        self.frame = framer.frame if framer is not None else None

    # -- driver interface (poll_loops.Driver)

    def open(self, wake: threading.Event | None = None) -> None:
        runner = self.runner
        cfg = runner.config
        settings: KafkaSettings = cfg.kafka
        self._thread_wake = wake
        self.consumer = Consumer(settings.consumer(
            runner.group_id, offset_reset="latest",
            **{"isolation.level": "read_committed" if cfg.exactly_once else "read_uncommitted"}))
        # Delivery reports only for failures (``producers.runner_producer_config``). Each record
        # carries this loop's callback, so a failure reaches the runner it belongs to.
        max_bytes = max(1_000_000, min(cfg.max_message_bytes, 1_000_000_000))
        if cfg.exactly_once:  # a transaction belongs to one producer: this version's own
            self.producer = Producer(producers.runner_producer_config(
                settings, max_bytes, **{"transactional.id": f"{runner.group_id}-{cfg.transactional_replica}"}))
            self.producer.init_transactions(30)
        else:
            self.producer = producers.acquire(settings, max_bytes)
        lot = kafka_parking.parking_lot(settings)
        if lot is not None:
            self.spot = lot.spot(self.consumer, on_wake=self.wake, interest=runner.record_filters)
        self.join = GroupJoin(settings.session_timeout_ms)
        self.join.started()
        self.consumer.subscribe(sorted(self.source_topics), on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        now = time.monotonic()
        self.next_commit = now + self.commit_interval
        self.next_punctuate = now + self.punctuate_interval

    def wake(self) -> None:
        """Make the poll thread look at this driver now (any thread)."""
        if self._thread_wake is not None:
            self._thread_wake.set()

    def stop_requested(self) -> bool:
        return self.runner._stop.is_set()

    def parked(self) -> bool:
        spot = self.spot
        return spot is not None and spot.parked and not spot.woken

    def cycle(self, timeout_s: float) -> int:
        """Poll once (waiting up to ``timeout_s`` for a first record), process, punctuate and
        checkpoint when due. Returns the number of records polled."""
        assert self.consumer is not None and self.producer is not None  # between open() and close()
        spot = self.spot
        if spot is not None and spot.parked and spot.woken:
            spot.unpark()
        msgs = poll_batch(self.consumer, CONSUME_BATCH, timeout_s)
        if self.restore_error:
            raise RunnerError(self.restore_error)
        n = len(msgs)
        aligner = self.aligner
        if aligner is not None and (n or aligner.holding):
            msgs = aligner.align(msgs, int(time.time() * 1000), self._has_more)
        mono = time.monotonic()
        produced = self._process(msgs) if msgs else 0
        # What keeps this version "hot" (and a parked-capable consumer awake): records that led
        # to output, or any record for a stateful version (a join's first branch is worth waiting
        # awake for). Records of other pipelines on a shared model topic do not.
        useful = n if self.tasks.stateful else produced
        if n:
            if useful:
                self.last_records_at = mono
            self.since_commit += n
        if mono >= self.next_punctuate:
            self.next_punctuate = mono + self.punctuate_interval
            if self.tasks.tasks:
                self._punctuate()
        if mono >= self.next_commit or (self.changelog_topic and self.since_commit >= self.commit_every):
            self.since_commit = 0
            self.next_commit = mono + self.commit_interval
            self._commit()
        else:
            self.producer.poll(0)
        if spot is not None:
            spot.active(n, useful)
        return n

    def close(self, error: BaseException | None) -> None:
        """Leave the group and let the clients go: after a requested stop (checkpoint first) or
        after a fatal error (reported as the runner's ERROR state)."""
        runner = self.runner
        self.closing = True
        try:
            if error is None:
                runner._report(RunnerState.STOPPING)
                if self.consumer is not None:
                    self._commit()
            else:
                log.error("pipeline %s (%s) stopped on error: %s", runner.msg.pipeline, runner.uid, error,
                          exc_info=not isinstance(error, RunnerError))
                failure = error if isinstance(error, RunnerError) else \
                    RunnerError(with_exception(REASON_START_FAILED, error))
                runner._report(RunnerState.ERROR, str(failure))
                runner._resolve(runner._started, failure)
        except Exception:
            log.exception("pipeline %s: final checkpoint failed", runner.msg.pipeline)
        finally:
            try:
                if self.spot is not None:
                    self.spot.close()
                if self.consumer is not None:
                    # Only a re-join is waited for: the group then has other members that keep
                    # using it. A version stopped before its first assignment (e.g. the engine is
                    # interrupted while starting) leaves at once, instead of one version after
                    # another each waiting up to the session timeout.
                    if self.join is not None and self.assigned_once:
                        self.join.finish(self.consumer)
                    self.consumer.close()  # a final revoke (checkpoint) while still on this thread
            except Exception:
                log.exception("pipeline %s: consumer close failed", runner.msg.pipeline)
            finally:
                if self.producer is not None:
                    if self.eos:
                        if self.in_txn:
                            self.producer.abort_transaction(10)
                        self.producer.flush(10)
                    else:
                        self.producer.flush(10)
                        producers.release(self.producer)
                # The consumer holds callbacks bound to this loop: drop it now, so its native
                # handle (and librdkafka's threads) go at once instead of at the next GC cycle.
                self.consumer = self.producer = self.spot = None
                self.tasks.close()
                if error is None:
                    runner._report(RunnerState.STOPPED)
                runner._resolve(runner._stopped)

    # -- rebalance callbacks (called inside consume(), in this thread)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.join is not None:
            self.join.assigned()
        if partitions:
            restore = self._restore if self.changelog_topic else None
            try:
                self.tasks.assign({tp.partition for tp in partitions}, restore)
            except Exception as exc:
                self.restore_error = with_exception(REASON_RESTORE_FAILED, exc)
                log.error("pipeline %s: %s", self.runner.msg.pipeline, self.restore_error)
                return  # the loop raises restore_error: never process a partition without its state
            self._pin_start_offsets(consumer, partitions)
            if self.spot is not None:  # records are due: resume a parked assignment
                self.spot.touch()
            self._log_partitions("assigned", partitions)
        if not self.assigned_once:
            self.assigned_once = True
            self.runner._report(RunnerState.RUNNING)
            self.runner._resolve(self.runner._started)
        else:
            self.runner._report(RunnerState.RUNNING)

    def _pin_start_offsets(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Resolve and commit the start position of every partition that has no committed offset.

        ``latest`` is the rule for a new version only: once committed, a later owner of the
        partition (after a crash or a rebalance) continues from there instead of skipping what was
        produced meanwhile. Resolving it before RUNNING is reported also means a record produced
        after ``start()`` returned is never skipped by a late offset lookup."""
        try:
            committed = consumer.committed(partitions, timeout=10)
            fresh = []
            for tp in committed:
                if tp.offset == OFFSET_INVALID or tp.offset < 0:
                    _, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                    tp.offset = high
                    fresh.append(tp)
            consumer.assign(committed)
            if fresh:
                consumer.commit(offsets=fresh, asynchronous=False)
            for tp in committed:
                if tp.offset >= 0:
                    self.committed[(tp.topic, tp.partition)] = tp.offset
        except Exception as exc:  # fall back to auto.offset.reset
            log.warning("pipeline %s: could not pin start offsets: %s", self.runner.msg.pipeline, exc)

    def _restore(self, states: list[PartitionState]) -> None:
        """Replay the changelog of newly assigned partitions before their processors are built."""
        assert self.changelog_topic is not None  # only stateful versions with a changelog restore
        n = cl.restore(self.runner.config.kafka, self.changelog_topic, states, read_committed=self.eos)
        self.runner.stats["restored"] += n
        if n:
            log.info("pipeline %s: restored %d changelog records for partitions %s",
                     self.runner.msg.pipeline, n, sorted(s.partition for s in states))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self.closing and self.join is not None:  # a rebalance: the new assignment follows
            self.join.started()
        if not (self.runner._stop.is_set() or self.closing):
            self.runner._report(RunnerState.REBALANCING)
        try:
            checkpointed = self._commit()
        except Exception:
            log.exception("commit on revoke failed for %s", self.runner.uid)
            checkpointed = False
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.offsets = {tp: o for tp, o in self.offsets.items() if tp not in revoked}
        self.committed = {tp: o for tp, o in self.committed.items() if tp not in revoked}
        try:
            kept = {tp.partition for tp in consumer.assignment() if (tp.topic, tp.partition) not in revoked}
        except Exception:
            kept = set()
        gone = {p for _, p in revoked} - kept
        if self.aligner is not None:   # never processed: their next owner reads them
            self.aligner.drop(revoked)
        for p in sorted(gone):
            task = self.tasks.get(p)
            if task is None:
                continue
            if checkpointed and self.changelog_topic:  # the local copy is complete up to here
                task.commit(cl.end_position(consumer, self.changelog_topic, p))
            self.tasks.revoke([p])
        if partitions:
            self._log_partitions("revoked", partitions)

    def _log_partitions(self, what: str, partitions: list[TopicPartition]) -> None:
        """Where a version's partitions run: one line per change, e.g. when replicas come and go."""
        log.info("pipeline %s v%d: partitions %s %s; this replica now runs partitions %s",
                 self.runner.msg.pipeline, self.runner.msg.version, what,
                 sorted({tp.partition for tp in partitions}), sorted(self.tasks.tasks))

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            if err.retriable() or err.code() in REDELIVERABLE:
                self.retriable_failures += 1
            log.error("pipeline %s: delivery to %s failed: %s", self.runner.msg.pipeline, msg.topic(), err)

    def _process(self, msgs: list[Message]) -> int:
        """Process polled records; returns how many records they produced.

        A record of a topic with a direct route (a chain step or a join straight to its sink,
        ``dataflow.topology.compiled.direct_routes``) is handled from its fields, its outputs keyed
        by the bytes consumed; any other record goes through ``process``. Outputs are queued as
        they are made, so in the order of their inputs."""
        tasks = self.tasks.tasks
        now_ms = int(time.time() * 1000)
        offsets = self.offsets
        send = self._sender()
        produced = 0
        routes_of: CompiledPipeline | None = None
        routes: Mapping[str, DirectSource] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise RuntimeError(f"consumer error: {err}")
                log.warning("pipeline %s: consumer error: %s", self.runner.msg.pipeline, err)
                continue
            topic: str
            partition: int
            offset: int
            # A record without an error has all three; confluent_kafka's stub says Optional.
            topic, partition, offset = m.topic(), m.partition(), m.offset()  # type: ignore[assignment]
            task = tasks.get(partition)
            if task is None:  # not ours (any more): its new owner processes it
                continue
            offsets[(topic, partition)] = offset + 1
            key = m.key()
            headers = m.headers()
            pipeline = task.pipeline
            if pipeline is not routes_of:
                routes_of, routes = pipeline, direct_routes(pipeline)
            direct = routes.get(topic)
            if direct is not None and headers is not None and (key is None or key.isascii()):
                # consumed headers are a list of (name, value or None) pairs; the stub says more
                done = direct(key, m.value(), headers, m.timestamp()[1], partition, now_ms)  # type: ignore[arg-type]
                if done is not None:
                    for sink, value, out_headers, out_ts in done:
                        send(sink, key, value, out_headers, out_ts)
                    produced += len(done)
                    continue
            # record_from_kafka, written out: two calls less per record
            record = Record(topic, key.decode("utf-8", "replace") if key is not None else None, m.value(),
                            headers if headers is not None and in_shape(headers) else normalise(headers),
                            m.timestamp()[1], partition)
            try:   # the task's processors (what task.process calls, one call less per record)
                outputs = pipeline.process(record, now_ms)
            except Exception as exc:  # bad input: log where it was, keep going (reference: log & continue)
                self.runner.stats["failed"] += 1
                log.error("pipeline %s: record %s[%d]@%d key=%r could not be processed: %s",
                          self.runner.msg.pipeline, topic, partition, offset, record.key, exc)
                continue
            for r in outputs:
                send(r.topic, r.key, r.value, r.headers, r.timestamp)
            produced += len(outputs)
        self.runner.stats["consumed"] += len(msgs)
        self.runner.stats["produced"] += produced
        self.dirty = True
        return produced

    def _has_more(self, topic: str, partition: int) -> bool:
        """Whether the consumer has not yet read everything the last fetch of that topic
        partition reported (unknown counts as yes: the aligner bounds the wait)."""
        assert self.consumer is not None  # between open() and close()
        tp = TopicPartition(topic, partition)
        try:
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            [position] = self.consumer.position([tp])
        except KafkaException:
            return True
        if high < 0:
            return True
        at = position.offset if position.offset >= 0 else self.committed.get((topic, partition))
        return at is None or at < high

    def _punctuate(self) -> None:
        now_ms = int(time.time() * 1000)
        out: list[Record] = []
        for task in list(self.tasks.tasks.values()):
            try:
                out.extend(task.punctuate(now_ms))
            except Exception:  # steps are isolated inside; this guards a runtime-supplied pipeline
                log.exception("pipeline %s: punctuate of partition %d failed",
                              self.runner.msg.pipeline, task.partition)
        if out:
            self.dirty = True
            self._produce(out)

    def _begin(self) -> None:
        assert self.producer is not None  # between open() and close()
        if self.eos and not self.in_txn:
            self.producer.begin_transaction()
            self.in_txn = True

    def _produce_changelog(self) -> None:
        """Send the tasks' state changes since the last checkpoint (last value per key)."""
        if self.changelog_topic is None:
            return
        entries = self.tasks.changelog_entries()
        if not entries:
            return
        self._begin()
        assert self.producer is not None  # between open() and close()
        self.dirty = True
        topic = self.changelog_topic
        producer = self.producer
        on_delivery = self._on_delivery
        queue = producer.produce
        for partition, key, value in entries:
            try:  # as in _produce: only a full queue goes through the waiting helper
                queue(topic, value, key, partition, on_delivery=on_delivery)
            except BufferError:
                produce(producer, topic, value, key, partition, on_delivery=on_delivery)

    def _produce(self, records: list[Record]) -> None:
        send = self._sender()
        for r in records:
            send(r.topic, r.key, r.value, r.headers, r.timestamp)
        self.runner.stats["produced"] += len(records)

    def _sender(self) -> Callable[[str, str | bytes | None, bytes | None, list[tuple[str, bytes]], int], None]:
        """What queues one output record, made once per batch of records: (topic, key, value,
        headers, timestamp), the record going to the partition of its key (str as a step made
        it, or the bytes consumed on a direct route: ``partition_for_key`` and the producer take
        either). Starts the batch's transaction first when exactly-once."""
        self._begin()
        assert self.producer is not None  # between open() and close()
        producer = self.producer
        queue = producer.produce
        on_delivery = self._on_delivery
        counts = self.partitions
        frame = self.frame
        partition_count = self._partition_count

        def send(topic: str, key: str | bytes | None, value: bytes | None, headers: list[tuple[str, bytes]],
                 timestamp: int) -> None:
            n = counts.get(topic) or partition_count(topic)
            partition = partition_for_key(key, n) if n > 1 else 0
            if frame is not None:
                value = frame(topic, value)
            try:  # the hot path queues directly; only a full queue goes through the waiting helper
                # All positional (topic, value, key, partition, callback, on_delivery, timestamp,
                # headers): confluent-kafka matches keyword arguments on every call, ~0.25 us of a
                # ~1 us produce.
                queue(topic, value, key, partition, on_delivery, None, timestamp,
                      headers or None)  # type: ignore[arg-type]  # the stub's list of str | bytes | None is invariant
            except BufferError:
                produce(producer, topic, value, key, partition, on_delivery=on_delivery, timestamp=timestamp,
                        headers=headers or None)

        return send

    def _partition_count(self, topic: str) -> int:
        assert self.producer is not None  # between open() and close()
        md = self.producer.list_topics(topic, timeout=5)
        tm = md.topics.get(topic)
        n = len(tm.partitions) if tm is not None and tm.partitions else 1
        self.partitions[topic] = n
        return n

    def _commit(self) -> bool:
        """Checkpoint: changelog -> deliver -> commit input offsets -> apply write buffers.

        Returns whether the state on disk now matches what was processed. If a delivery failed
        retriably or timed out in the producer (``REDELIVERABLE``), or a transaction must abort,
        the offsets are not committed, the tasks roll back to their last checkpoint and the
        consumer is rewound to the last committed positions, so the inputs are processed again
        (duplicates, never loss). Permanent delivery errors (e.g. message too large) are logged
        and skipped, as the reference does, so one bad record cannot wedge the pipeline."""
        self._produce_changelog()
        if not self.dirty:
            return True
        assert self.consumer is not None and self.producer is not None  # between open() and close()

        offsets = [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]
        if self.eos:
            try:
                self._begin()
                if offsets:
                    self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
                self.producer.commit_transaction(30)
                self.in_txn = False
            except KafkaException as exc:
                if not exc.args[0].txn_requires_abort():
                    raise
                log.error("pipeline %s: transaction aborted (%s); reprocessing", self.runner.msg.pipeline, exc)
                self.producer.abort_transaction(30)
                self.in_txn = False
                self._rewind()
                return False
            self.tasks.commit()
        else:
            remaining = self.producer.flush(30)
            if remaining or self.retriable_failures:
                log.error("pipeline %s: %d records undelivered, %d failed; reprocessing since the last commit",
                          self.runner.msg.pipeline, remaining, self.retriable_failures)
                self._rewind()
                return False
            committed = True
            if offsets:
                try:
                    self.consumer.commit(offsets=offsets, asynchronous=False)
                except KafkaException as exc:  # e.g. mid-rebalance: the records are replayed later
                    log.warning("pipeline %s: offset commit failed: %s", self.runner.msg.pipeline, exc)
                    committed = False
            self.tasks.commit()  # the changelog has these changes: the local copy may follow
            if not committed:
                return True
        self.committed.update(self.offsets)
        self.dirty = False
        self.runner.stats["commits"] += 1
        return True

    def _rewind(self) -> None:
        """Roll the tasks back to their last checkpoint and seek every partition back to its last
        committed (or pinned start) offset."""
        assert self.consumer is not None  # between open() and close()
        self.retriable_failures = 0
        self.tasks.rollback()
        # held records were read past but never processed: read them again as well
        held = self.aligner.drop() if self.aligner is not None else set()
        for (topic, partition), offset in self.committed.items():
            if (topic, partition) in self.offsets or (topic, partition) in held:
                try:
                    self.consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException as exc:
                    log.warning("pipeline %s: cannot rewind %s[%d]: %s", self.runner.msg.pipeline,
                                topic, partition, exc)
        self.offsets = {tp: o for tp, o in self.offsets.items() if tp not in self.committed}
        self.dirty = False
