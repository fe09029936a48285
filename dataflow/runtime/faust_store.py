"""``StateStore`` on a Faust table: partition-local RocksDB state with a changelog topic.

Why not the table's mapping API: Faust decides the partition of every table read and write from
the *current stream event* (a context variable) and refuses writes outside an agent. Our steps
also change state from ``punctuate`` (outer-join expiry, batch windows), where there is no event.
So this adapter talks to the table's RocksDB store per partition and sends changelog records
itself with an explicit partition:

* while a record is processed the worker sets ``partition`` to the record's partition: reads and
  writes then go to that partition's database and changelog partition, as in Kafka Streams
  (state is per task). Records of one request share a partition on every topic (spec 2.3: the
  key starts with the partition number), so per-request state keys meet in one partition.
* during ``punctuate`` (``partition is None``) reads search every partition this worker owns;
  a delete or overwrite goes to the partition that holds the key; a new key goes to the lowest
  owned partition.

Faust restores each partition's database from the changelog when the partition is assigned (after
a crash, a lost state dir, or a move to another replica) and records the changelog offsets it
has written, so a restart with the same state dir replays only the tail.

Changelog writes are buffered (``buffered=True``, at-least-once): the worker calls
``ChangelogWriter.flush`` after each processed batch, which appends them to aiokafka
``BatchBuilder``s per changelog partition and records the first offset of each sent batch as
the table's persisted offset (Faust itself records every write's offset; see ``_persisted``). Going through Faust's
``send_soon`` buffer per write cost more than the step itself and made commits overlap
(benchmarks/FAUST_PROFILE.md). With exactly-once (batch path) they go to the partition's
transactional producer, so they commit with its input offsets; ``buffered=False`` (the agent path
under exactly-once) uses Faust's ``send_changelog``.

The Faust internals used here (``_db_for_partition``, ``_dbs``, ``offset_key``,
``set_persisted_offset``) are pinned by the integration tests in
tests/integration/runtime/test_faust_runtime.py.
"""
from __future__ import annotations

import hashlib
import logging
import re
from typing import Iterator

from dataflow.state.base import StateStore

log = logging.getLogger("dataflow.runtime.faust_worker")

_TABLE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]")


def table_name_for(store_name: str) -> str:
    """A Faust table (and changelog topic) name for a store name such as ``join:step-a``.

    Characters a topic name cannot hold become ``_``; a short hash keeps distinct store names
    distinct after that substitution.
    """
    clean = _TABLE_NAME_RE.sub("_", store_name)
    if clean != store_name or len(clean) > 100:
        digest = hashlib.md5(store_name.encode()).hexdigest()[:8]
        clean = f"{clean[:100]}-{digest}"
    return clean


class FaustTableStore(StateStore):
    """Byte-keyed state in one Faust table (raw key/value serializers)."""

    def __init__(self, table, name: str, *, buffered: bool = True):
        self.table = table
        self.name = name
        self.buffered = buffered
        # Set by the worker around ``pipeline.process``; None during punctuate.
        self.partition: int | None = None
        self.pending: list[tuple[int, bytes, bytes | None]] = []

    # -- Faust store access --------------------------------------------------------------------
    @property
    def _rocks(self):
        return self.table.data

    def _db(self, partition: int):
        return self._rocks._db_for_partition(partition)

    def _owned(self) -> list[tuple[int, object]]:
        return sorted(self._rocks._dbs.items(), key=lambda item: item[0])

    def _partition_holding(self, key: bytes) -> int | None:
        for partition, db in self._owned():
            if db.get(key) is not None:
                return partition
        return None

    def _changelog(self, partition: int, key: bytes, value: bytes | None) -> None:
        if self.buffered:
            self.pending.append((partition, key, value))
        else:
            self.table.send_changelog(partition, key, value, key_serializer="raw", value_serializer="raw")

    def take_pending(self) -> list[tuple[int, bytes, bytes | None]]:
        pending, self.pending = self.pending, []
        return pending

    # -- StateStore ------------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        if self.partition is not None:
            return self._db(self.partition).get(key)
        for _, db in self._owned():
            value = db.get(key)
            if value is not None:
                return value
        return None

    def put(self, key: bytes, value: bytes) -> None:
        partition = self.partition
        if partition is None:
            partition = self._partition_holding(key)
            if partition is None:
                owned = self._owned()
                partition = owned[0][0] if owned else 0
        self._db(partition).put(key, value)
        self._changelog(partition, key, value)

    def delete(self, key: bytes) -> None:
        if self.partition is not None:
            db = self._db(self.partition)
            if db.get(key) is not None:
                db.delete(key)
                self._changelog(self.partition, key, None)
            return
        partition = self._partition_holding(key)
        if partition is not None:
            self._db(partition).delete(key)
            self._changelog(partition, key, None)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        if self.partition is not None:
            dbs = [self._db(self.partition)]
        else:
            dbs = [db for _, db in self._owned()]
        offset_key = self._rocks.offset_key
        found: list[tuple[bytes, bytes]] = []
        for db in dbs:
            for key, value in db.items(from_key=prefix or None):
                if not key.startswith(prefix):
                    break
                if key != offset_key:
                    found.append((key, value))
        found.sort()
        return iter(found)


class ChangelogWriter:
    """Sends the buffered changelog writes of some ``FaustTableStore``s through the aiokafka producer."""

    def __init__(self, app, stores: list[FaustTableStore], producer_for=None):
        self.app = app
        self.stores = stores
        # partition -> aiokafka producer (exactly-once: that partition's transactional producer)
        self.producer_for = producer_for or (lambda partition: app.producer._producer)
        self.failed = 0

    async def flush(self) -> None:
        for store in self.stores:
            if store.pending:
                await self._send(store, store.take_pending())

    async def _send(self, store: FaustTableStore, writes) -> None:
        from faust.types import TP

        topic = store.table.changelog_topic.get_topic_name()
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for partition, key, value in writes:
            by_partition.setdefault(partition, []).append((key, value))
        for partition, items in by_partition.items():
            producer = self.producer_for(partition)
            if producer is None:
                log.warning("changelog partition %s was revoked: %d writes not sent (the new owner"
                            " reprocesses their inputs)", partition, len(items))
                continue
            tp = TP(topic, partition)
            batch = producer.create_batch()
            count = 0
            for key, value in items:
                if batch.append(timestamp=None, key=key, value=value, headers=[]) is None:
                    await self._submit(producer, store, batch, tp, count)
                    batch, count = producer.create_batch(), 0
                    if batch.append(timestamp=None, key=key, value=value, headers=[]) is None:
                        fut = await producer.send(topic, value, key=key, partition=partition)
                        fut.add_done_callback(self._persisted(store, tp, 1))
                        continue
                count += 1
            if count:
                await self._submit(producer, store, batch, tp, count)

    async def _submit(self, producer, store, batch, tp, count: int) -> None:
        fut = await producer.send_batch(batch, tp.topic, partition=tp.partition)
        fut.add_done_callback(self._persisted(store, tp, count))

    def _persisted(self, store: FaustTableStore, tp, count: int):
        def done(fut) -> None:
            if fut.cancelled() or fut.exception() is not None:
                self.failed += 1
                log.error("changelog write to %s failed: %s", tp, None if fut.cancelled() else fut.exception())
                return
            meta = fut.result()
            if meta is None or meta.offset is None:
                return
            # The offset Faust resumes recovery from for this partition's local database. The
            # batch's *first* offset, not its last: replaying the rest of a batch is harmless
            # (the database already holds those writes), while a persisted offset above the
            # broker's reported end offset makes Faust refuse to recover (ConsistencyError), and
            # the embedded broker reports the end of a topic as the first offset of its last
            # batch + 1 (environment notes, defect 1).
            try:
                store.table.data.set_persisted_offset(tp, meta.offset)
            except Exception as exc:  # noqa: BLE001 - partition revoked meanwhile: recovery replays more
                log.debug("cannot record changelog offset for %s: %s", tp, exc)
        return done
