"""The batched processing path of the Faust worker (the default; ``path="agent"`` is the stock one).

Why: profiling the stock path (an agent iterating ``stream.events()``) showed Faust's per-record
machinery, not our step code, as the ceiling (~6k msg/s per core, benchmarks/FAUST_PROFILE.md):
its fetch loop awaits each record's delivery through ``wait_first`` (two new asyncio tasks per
record), then the conductor, a channel queue and the stream iterator each add a hop, and the
producer creates a future per record.

This path keeps everything else Faust does (group membership and rebalancing, offset tracking and
commits; the partition tasks' restore and checkpoints hook into those, see ``faust_tasks``) and
replaces two things:

* the consumer's fetch loop (``Consumer._drain_messages``): each ``getmany`` result is split into
  records of the pipeline's source topics, handed over as one batch, and everything else, which
  still goes through Faust's conductor. Faust's read-offset and gap bookkeeping is kept so
  commits stay correct;
* per-record produce: outputs are grouped by (topic, partition) and appended to aiokafka
  ``BatchBuilder``s, one future per batch instead of per record.

``BatchProcessor`` runs each record through the task of its partition and acks the records
(``consumer.ack``) after their outputs are queued in the producer, all under the task driver's
lock; every offset commit is a checkpoint that flushes the producer first, so delivery stays
at-least-once. This path is at-least-once only: the worker keeps exactly-once runs on the agent
path, whose sends take Faust's per-transaction locks (``faust_worker.FaustWorker._wire``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import TP

from dataflow.kafka import partition_for_key
from dataflow.records import Record, record_from_event
from dataflow.runtime.alignment import TimestampAligner
from dataflow.topology.compiled import direct_routes

if TYPE_CHECKING:  # only named in annotations
    import faust
    from faust.transport.drivers.aiokafka import Producer as AIOKafkaFaustProducer
    from faust.types import Message as FaustMessage
    from mode import Service

    from dataflow.runtime.tasks import PartitionTasks
    from dataflow.schema_registry import Framer

log = logging.getLogger("dataflow.runtime.faust_worker")

ClientHeaders = tuple[tuple[str, bytes | None], ...]   # what aiokafka hands over
BatchHandler = Callable[[list["FaustMessage"]], Awaitable[None]]


def install_batch_drain(app: faust.App, source_topics: Iterable[str], handle_batch: BatchHandler) -> None:
    """Replace the fetch loop of ``app``'s consumer with one that delivers source records in batches.

    Patched on the consumer *class* (one app per worker process) so the consumer itself is still
    created by Faust's worker: a consumer created earlier would miss ``app.in_worker`` and, with
    it, exactly-once transactions.
    """
    sources = frozenset(source_topics)

    async def drain_messages(consumer: AIOKafkaFaustConsumer, fetcher: Service) -> None:
        if consumer.app is not app:  # another app in this process: Faust's own loop
            return await original(consumer, fetcher)
        callback = consumer.callback                # Faust's conductor: changelogs etc.
        getmany = consumer.getmany
        consumer_stopped = consumer._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        read_offset = consumer._read_offset
        acks_enabled_for = app.topics.acks_enabled_for
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                await asyncio.sleep(0)
                if consumer.should_stop:
                    break
                batch: list[FaustMessage] = []
                async for tp, message in getmany(timeout=1.0):
                    offset = message.offset
                    last = read_offset[tp]
                    if last is not None and offset < last:
                        continue                    # already delivered (seek back)
                    if last is not None and offset - last > 1 and acks_enabled_for(message.topic):
                        await consumer._add_gap(tp, last + 1, offset)
                    read_offset[tp] = offset
                    if tp.topic in sources:
                        batch.append(message)
                    else:
                        if batch:
                            await handle_batch(batch)
                            batch = []
                        await callback(message)
                await handle_batch(batch)   # also when empty: records held back may be due
                commit_every = consumer._commit_every
                if commit_every is not None and consumer._n_acked >= commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
        except consumer.consumer_stopped_errors:
            if app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if app.should_stop:
                return
            raise

    original = AIOKafkaFaustConsumer._drain_messages
    AIOKafkaFaustConsumer._drain_messages = drain_messages  # type: ignore[method-assign, assignment]  # patching faust


class BatchProducer:
    """Queues output records in the aiokafka producer, one ``BatchBuilder`` per (topic, partition)."""

    def __init__(self, app: faust.App, partitions: dict[str, int], default_partitions: int, *,
                 framer: Framer | None = None):
        """``framer``: a ``dataflow.schema_registry.Framer`` when values get schema-registry framing."""
        self.app = app
        self.framer = framer
        self.partitions = partitions
        self.default_partitions = default_partitions

    def _on_delivery(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("produce failed: %s", fut.exception())

    async def send(self, records: list[Record]) -> None:
        """Queue ``records``, each to the partition of its key."""
        if self.framer is not None:
            records = [out.evolve(value=await self.framer.aframe(out.topic, out.value)) for out in records]
        groups: dict[tuple[str, int], list[Record]] = {}
        partitions, default = self.partitions, self.default_partitions
        for out in records:
            p = partition_for_key(out.key, partitions.get(out.topic, default))
            groups.setdefault((out.topic, p), []).append(out)
        producer = cast("AIOKafkaFaustProducer", self.app.producer)._producer
        assert producer is not None, "the Faust producer starts before the agents"
        for (topic, partition), group in groups.items():
            batch = producer.create_batch()
            for out in group:
                key = out.key.encode() if out.key is not None else None
                timestamp = out.timestamp or None
                if batch.append(timestamp=timestamp, key=key, value=out.value, headers=out.headers) is None:
                    if batch.record_count():
                        fut = await producer.send_batch(batch, topic, partition=partition)
                        fut.add_done_callback(self._on_delivery)
                    batch = producer.create_batch()
                    if batch.append(timestamp=timestamp, key=key, value=out.value, headers=out.headers) is None:
                        # larger than a whole batch: the producer's own path sizes it
                        fut = await producer.send(topic, out.value, key=key, partition=partition,
                                                  timestamp_ms=timestamp, headers=out.headers)
                        fut.add_done_callback(self._on_delivery)
                        batch = producer.create_batch()
            if batch.record_count():
                fut = await producer.send_batch(batch, topic, partition=partition)
                fut.add_done_callback(self._on_delivery)


def _describe(message: FaustMessage) -> tuple[str, int, int]:
    """A message's (topic, partition, timestamp in ms) for the aligner."""
    timestamp = message.timestamp
    return message.topic, message.partition, round(timestamp * 1000) if timestamp else 0


class BatchProcessor:
    """Runs each message of a batch through the task of its partition, produces, then acks them.

    The whole batch is one critical section under ``lock`` (``faust_tasks.TaskDriver.lock``): a
    checkpoint sees either none or all of a batch's state changes, outputs and acks.

    The records of topics that meet in a join go through ``dataflow.runtime.alignment`` first, as
    in the Kafka runner: a record held back is not acked, so no commit passes it."""

    def __init__(self, app: faust.App, tasks: PartitionTasks, lock: asyncio.Lock, producer: BatchProducer,
                 aligned: tuple[frozenset[str], ...] = ()):
        self.app = app
        self.tasks = tasks                  # dataflow.runtime.tasks.PartitionTasks
        self.lock = lock
        self.producer = producer
        self.aligner: TimestampAligner[FaustMessage] | None = \
            TimestampAligner(aligned, _describe) if aligned else None

    async def __call__(self, messages: list[FaustMessage]) -> None:
        aligner = self.aligner
        if aligner is None:
            if messages:
                async with self.lock:
                    await self._process(messages)
            return
        if not (messages or aligner.holding):
            return
        async with self.lock:
            released = aligner.align(messages, int(time.time() * 1000), self._has_more)
            if released:
                await self._process(released)

    def _has_more(self, topic: str, partition: int) -> bool:
        """Whether the consumer has not yet read everything the last fetch of that topic
        partition reported (unknown counts as yes: the aligner bounds the wait)."""
        consumer = cast(AIOKafkaFaustConsumer, self.app.consumer)
        tp = TP(topic, partition)
        try:
            high = consumer.highwater(tp)
        except Exception:
            return True
        if high is None:
            return True
        read = consumer._read_offset[tp]   # Faust's own bookkeeping: the last offset read
        at = read + 1 if read is not None else consumer._committed_offset[tp]
        return at is None or at < high

    def drop_held(self) -> None:
        """Forget the records held back (a rebalance: every partition is read again from its
        committed offset when it is assigned)."""
        if self.aligner is not None:
            self.aligner.drop()

    async def _process(self, messages: list[FaustMessage]) -> None:
        """Each message through its partition's task: by the topic's direct route when it has
        one and the message is of the usual kind (as the Kafka runner does), else ``process``."""
        tasks = self.tasks.tasks
        outputs: list[Record] = []
        handled: list[FaustMessage] = []
        now_ms = int(time.time() * 1000)
        for message in messages:
            task = tasks.get(message.partition)
            if task is None:  # not ours (any more): not acked, its owner processes it
                log.warning("record %s[%s]@%s of a partition without a task; not processed",
                            message.topic, message.partition, message.offset)
                continue
            handled.append(message)
            try:
                direct = direct_routes(task.pipeline).get(message.topic)
                key, headers = message.key, message.headers
                # aiokafka hands headers over as a tuple of (name, value) pairs
                if direct is not None and type(headers) in (tuple, list) and (key is None or key.isascii()):
                    timestamp = message.timestamp
                    ts = round(timestamp * 1000) if timestamp else 0
                    pairs: list[tuple[str, bytes | None]] = list(cast("ClientHeaders", headers))
                    done = direct(key, message.value, pairs, ts, message.partition, now_ms)
                    if done is not None:
                        text_key = key.decode() if key is not None else None
                        outputs.extend(Record(topic, text_key, value, out_headers, out_ts, message.partition)
                                       for topic, value, out_headers, out_ts in done)
                        continue
                produced = task.process(record_from_event(message), now_ms)
                if produced:
                    outputs.extend(produced)
            except Exception:
                log.exception("record %s[%s]@%s failed; skipped", message.topic, message.partition,
                              message.offset)
        if outputs:
            await self.producer.send(outputs)
        ack = self.app.consumer.ack
        for message in handled:
            ack(message)
