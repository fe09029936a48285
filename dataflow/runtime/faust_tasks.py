"""Partition tasks inside the Faust worker: the same state semantics as ``KafkaRunner``.

The worker runs its pipeline version as ``dataflow.runtime.tasks.PartitionTasks``: one task per
assigned source partition, each with its own RocksDB (``rocks_partition_state`` under the worker's
data directory) and processors built over it. State is made durable in the version's changelog
topic (``dataflow.runtime.changelog``: one compacted topic per stateful version, partition p =
state of input partition p). Faust's tables are not used. ``TaskDriver`` hooks this into Faust's
group handling and commits:

* Assignment. Faust pauses the assigned partitions during a rebalance and awaits its
  ``on_rebalance_complete`` signal right before it resumes them (``Recovery._resume_streams``).
  The driver handles that signal: for each newly assigned source partition it opens the state,
  restores it from the changelog (in a thread) and only then builds the task, so no record of a
  partition is processed before its task exists. Faust reports the end of the rebalance only
  after that, and the worker reports RUNNING after the end of the rebalance. A restore failure is
  fatal: the worker reports ERROR ("kafka streams: state restore from changelog failed ...") and
  its app crashes.
* Checkpoint. Every Faust offset commit (``Consumer.commit``: the periodic one, the one every
  ``broker_commit_every`` records, the final one on stop) runs as a checkpoint:
  at-least-once: send the tasks' changelog entries -> flush the producer (outputs and changelog
  delivered; a failed changelog delivery crashes the worker rather than commit offsets past
  state that is not durable) -> commit input offsets -> apply each task's write buffer.
  exactly-once: each partition's changelog entries go into that partition's transaction (the one
  that holds its outputs and commits its input offsets); Faust commits the transactions of the
  partitions with new offsets, the driver commits those of partitions whose state changed without
  new input (punctuation); the write buffers are applied after the transactions commit.
* Revocation. Before Faust forgets the revoked partitions' acknowledged offsets
  (``Consumer.on_partitions_revoked``), the driver checkpoints (offsets of the revoked partitions
  included), stores the changelog end position in each revoked partition's database (a later
  restore on this worker replays only what others wrote meanwhile) and closes the tasks.
* Processing and punctuation hold ``TaskDriver.lock``, and so do checkpoints, assignment and
  revocation: a checkpoint never sees a record half processed, and a record is acknowledged in
  the same critical section that processed it, so the committed offsets and the checkpointed
  state always cover the same records.

Stateless versions (``PartitionTasks.stateful`` False) have tasks without state: no changelog, no
restore, no database; checkpoints then only commit offsets.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, cast

from confluent_kafka import Consumer
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer

from dataflow.kafka import KafkaSettings
from dataflow.runtime import changelog as cl
from dataflow.runtime.kafka_runtime import REASON_RESTORE_FAILED
from dataflow.runtime.tasks import ChangelogEntry, PartitionTasks
from dataflow.state.partition import PartitionState

if TYPE_CHECKING:  # only named in annotations
    import faust
    from faust.transport.drivers.aiokafka import Producer as AIOKafkaFaustProducer
    from faust.types import TP

log = logging.getLogger("dataflow.runtime.faust_worker")


class CheckpointError(RuntimeError):
    """State changes could not be made durable; offsets covering them must not be committed."""


class TaskDriver:
    """Drives ``PartitionTasks`` from a Faust app's rebalances and offset commits."""

    def __init__(self, app: faust.App, tasks: PartitionTasks, *, source_topics: Iterable[str], settings: KafkaSettings,
                 changelog_topic: str | None, exactly_once: bool,
                 on_fatal: Callable[[str], None]):
        self.app = app
        self.tasks = tasks
        self.sources = frozenset(source_topics)
        self.settings = settings                       # KafkaSettings (restore, end offsets)
        self.changelog_topic = changelog_topic if tasks.stateful else None
        self.eos = exactly_once
        self.on_fatal = on_fatal                       # reports ERROR with a reason
        self.lock = asyncio.Lock()
        self.fatal_reason: str | None = None
        self._positions: Consumer | None = None        # confluent-kafka consumer for end offsets
        self._committed_by_faust: set[int] = set()     # partitions Faust committed (exactly-once)

    # -- wiring --------------------------------------------------------------------------------
    def install(self) -> None:
        """Hook the app's consumer class (one app per worker process; patched on the class so the
        consumer itself is still created by Faust's worker) and its rebalance signal."""
        app, driver = self.app, self
        original_commit = AIOKafkaFaustConsumer.commit
        original_revoked = AIOKafkaFaustConsumer.on_partitions_revoked

        async def commit(consumer: AIOKafkaFaustConsumer, topics: AbstractSet[str | TP] | None = None,
                         start_new_transaction: bool = True) -> bool:
            if consumer.app is not app:
                return await original_commit(consumer, topics, start_new_transaction)
            async with driver.lock:
                return await driver._checkpoint(
                    lambda: original_commit(consumer, topics, start_new_transaction),
                    start_new_transaction)

        async def on_partitions_revoked(consumer: AIOKafkaFaustConsumer, revoked: set[TP]) -> None:
            if consumer.app is app:
                await driver._on_revoked(revoked, lambda: original_commit(consumer))
            await original_revoked(consumer, revoked)

        AIOKafkaFaustConsumer.commit = commit  # type: ignore[method-assign, assignment]  # patching faust
        AIOKafkaFaustConsumer.on_partitions_revoked = on_partitions_revoked  # type: ignore[method-assign]
        app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]  # faust's receiver type wants *args
        if self.eos:  # which partitions' transactions Faust committed with offsets
            tables = app.tables
            original_on_commit = tables.on_commit

            def on_commit(offsets: MutableMapping[TP, int]) -> None:
                self._committed_by_faust.update(tp.partition for tp in offsets if tp.topic in self.sources)
                original_on_commit(offsets)

            tables.on_commit = on_commit  # type: ignore[method-assign]  # patching faust

    def transactional_id(self, partition: int) -> str:
        """Faust's transactional producer of a source partition (it commits that partition's
        input offsets)."""
        group = self.app.assignor.group_for_topic(sorted(self.sources)[0])
        return f"{self.app.conf.id}-{group}-{partition}"

    # -- assignment ----------------------------------------------------------------------------
    async def _on_rebalance_complete(self, sender: object = None, **kwargs: object) -> None:
        """Awaited by Faust before it resumes the assigned partitions: build the missing tasks."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception as exc:
            log.debug("no assignment to build tasks for: %s", exc)
            return
        assigned = {tp.partition for tp in assignment if tp.topic in self.sources}
        async with self.lock:
            stale = set(self.tasks.tasks) - assigned
            if stale:  # lost without a revoke callback: their unsaved changes are dropped
                for p in stale:
                    self._drop_changes(p)
                self.tasks.revoke(stale)
            new = sorted(assigned - set(self.tasks.tasks))
            if not new:
                return
            restore = self._restore if self.changelog_topic else None
            try:
                await asyncio.to_thread(self.tasks.assign, new, restore)
            except Exception as exc:
                await self._fail(f"{REASON_RESTORE_FAILED} Exception: {exc}", exc)

    def _restore(self, states: list[PartitionState]) -> None:
        """Replay the changelog of newly assigned partitions (runs in a thread)."""
        assert self.changelog_topic is not None  # only stateful versions with a changelog restore
        n = cl.restore(self.settings, self.changelog_topic, states, read_committed=self.eos)
        if n:
            log.info("restored %d changelog records for partitions %s", n, sorted(s.partition for s in states))

    async def _fail(self, reason: str, exc: BaseException) -> None:
        log.error("%s", reason)
        self.fatal_reason = reason
        self.on_fatal(reason)
        await self.app.crash(exc)

    # -- revocation ----------------------------------------------------------------------------
    async def _on_revoked(self, revoked: Iterable[TP], commit_offsets: Callable[[], Awaitable[bool]]) -> None:
        gone = sorted({tp.partition for tp in revoked if tp.topic in self.sources})
        if not gone:
            return
        async with self.lock:
            if not any(p in self.tasks for p in gone):
                return
            try:
                await self._checkpoint(commit_offsets, True)
                checkpointed = True
            except Exception:
                log.exception("checkpoint on revoke failed")
                checkpointed = False
            for p in gone:
                task = self.tasks.get(p)
                if task is None or task.state is None:
                    continue
                if checkpointed and self.changelog_topic and not task.state.dirty:
                    position = await asyncio.to_thread(self._end_position, p)
                    if position is not None:
                        task.commit(position)  # the local copy is complete up to here
                else:
                    self._drop_changes(p)
            self.tasks.revoke(gone)

    def _drop_changes(self, partition: int) -> None:
        task = self.tasks.get(partition)
        if task is not None and task.state is not None:
            task.state.rollback()

    def _end_position(self, partition: int) -> int | None:
        assert self.changelog_topic is not None  # asked only of versions with a changelog
        if self._positions is None:
            self._positions = Consumer(self.settings.consumer(f"changelog-positions-{uuid.uuid4().hex[:12]}"))
        return cl.end_position(self._positions, self.changelog_topic, partition)

    # -- checkpoint ----------------------------------------------------------------------------
    async def _checkpoint(self, commit_offsets: Callable[[], Awaitable[bool]],
                          start_new_transaction: bool) -> bool:
        """Changelog -> delivered -> input offsets committed -> write buffers applied (lock held)."""
        entries = self.tasks.changelog_entries() if self.changelog_topic else []
        if self.eos:
            did_commit = await self._checkpoint_transactional(entries, commit_offsets, start_new_transaction)
        else:
            futures = await self._send_changelog(entries) if entries else []
            await self.app.producer.flush()
            failed = [f for f in futures if f.cancelled() or f.exception() is not None]
            if failed:
                error = CheckpointError(f"{len(failed)} changelog batches to {self.changelog_topic} not delivered"
                                        f" ({failed[0].exception() if not failed[0].cancelled() else 'cancelled'})")
                await self._fail(f"kafka streams: state checkpoint failed Exception: {error}", error)
                raise error
            did_commit = await commit_offsets()
        self.tasks.commit()  # the changelog has these changes: the local copy may follow
        return did_commit

    async def _checkpoint_transactional(self, entries: list[ChangelogEntry],
                                        commit_offsets: Callable[[], Awaitable[bool]],
                                        start_new_transaction: bool) -> bool:
        producer = self.app.producer
        topic = self.changelog_topic
        assert topic is not None  # entries come only from versions with a changelog
        dirty: set[int] = set()
        for partition, key, value in entries:
            await producer.send(topic, key, value, partition, None, None,
                                transactional_id=self.transactional_id(partition))
            dirty.add(partition)
        self._committed_by_faust.clear()
        did_commit = await commit_offsets()
        # Partitions whose state changed without new input (punctuation) have no offsets for Faust
        # to commit: commit their transaction here so their state and outputs are not left open.
        for partition in sorted(dirty - self._committed_by_faust):
            await self._commit_transaction(self.transactional_id(partition), start_new_transaction)
        return did_commit

    async def _commit_transaction(self, transactional_id: str, start_new_transaction: bool) -> None:
        producer = cast("AIOKafkaFaustProducer", self.app.producer)  # the app's transport is aiokafka
        async with producer._trn_locks[transactional_id]:
            transaction_producer = producer._transaction_producers.get(transactional_id)
            if transaction_producer is None:
                raise CheckpointError(f"no transaction for {transactional_id}: partition revoked")
            await transaction_producer.commit_transaction()
            if start_new_transaction:
                await transaction_producer.begin_transaction()

    async def _send_changelog(self, entries: list[ChangelogEntry]) -> list[asyncio.Future[Any]]:
        """Append the entries to aiokafka ``BatchBuilder``s, one per changelog partition (one future
        per batch rather than per record); returns the delivery futures."""
        producer = cast("AIOKafkaFaustProducer", self.app.producer)._producer  # the app's transport is aiokafka
        assert producer is not None  # the app is running
        topic = self.changelog_topic
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for partition, key, value in entries:
            by_partition.setdefault(partition, []).append((key, value))
        futures: list[asyncio.Future[Any]] = []
        for partition, items in sorted(by_partition.items()):
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(timestamp=None, key=key, value=value, headers=[]) is None:
                    if batch.record_count():
                        futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(timestamp=None, key=key, value=value, headers=[]) is None:
                        # larger than a whole batch: the producer's own path sizes it
                        futures.append(await producer.send(topic, value, key=key, partition=partition))
                        batch = producer.create_batch()
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    # -- shutdown ------------------------------------------------------------------------------
    def close(self) -> None:
        """After the app stopped (its final commit was a checkpoint): store each partition's
        changelog end position when its state is saved, then close the databases."""
        try:
            for p, task in sorted(self.tasks.tasks.items()):
                if task.state is None:
                    continue
                if self.changelog_topic and not task.state.dirty and self.fatal_reason is None:
                    position = self._end_position(p)
                    if position is not None:
                        task.commit(position)
                else:
                    task.state.rollback()  # not in the changelog: never applied locally
        except Exception:
            log.exception("could not store changelog positions")
        finally:
            self.tasks.close()
            if self._positions is not None:
                self._positions.close()
                self._positions = None
