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

The Faust internals used here (``_db_for_partition``, ``_dbs``, ``offset_key``) are pinned by
the integration tests in tests/integration/runtime/test_faust_runtime.py.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterator

from dataflow.state.base import StateStore

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

    def __init__(self, table, name: str):
        self.table = table
        self.name = name
        # Set by the worker around ``pipeline.process``; None during punctuate.
        self.partition: int | None = None

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
        self.table.send_changelog(partition, key, value, key_serializer="raw", value_serializer="raw")

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
