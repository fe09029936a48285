"""The state of one partition of one pipeline version: one key-value database, a key prefix per
step store, and a write buffer that turns the writes between two checkpoints into one batch.

Why one database per (version, partition): state moves with partitions. When a partition is
assigned, its database is restored from the changelog and only then are the processors that read
it built; when it is revoked, its processors are closed and the database stays on disk for a warm
restore later. Nothing needs a key -> partition map: a write belongs to the partition of the task
that makes it, punctuation included.

Why a write buffer: steps read and write on every record, but only the last value of a key per
checkpoint matters. Writes land in an in-memory buffer that reads see (read-your-writes); at a
checkpoint the runtime sends ``changes()`` to the changelog, makes them durable, and then applies
the buffer to the database in one write batch (``commit``). ``rollback`` drops the buffer, so a
rewind or an aborted transaction leaves no trace in the database.

Database keys are ``<store name>\\x00<store key>`` (the changelog uses the same keys). Bookkeeping
lives under ``\\xff``-prefixed keys, which no store name produces.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, cast

from dataflow.state.base import StateStore

if TYPE_CHECKING:  # rocksdict is imported when a RocksDB store is first opened
    from rocksdict import Cache, WriteBufferManager

SEPARATOR = b"\x00"
_META = b"\xffmeta\x00"
_CHANGELOG_POSITION = _META + b"changelog-position"


class KeyValueBackend(Protocol):
    """What ``PartitionState`` needs from a database."""

    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with ``prefix``, in key order."""

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        """Apply puts (bytes) and deletes (None) atomically."""

    def close(self) -> None: ...


class MemoryBackend:
    """A dict: for the in-memory test driver and unit tests."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted((k, v) for k, v in self.data.items() if k.startswith(prefix)))

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        for k, v in changes.items():
            if v is None:
                self.data.pop(k, None)
            else:
                self.data[k] = v

    def close(self) -> None:
        pass


# An engine holds one database per stateful partition of every pipeline version, so memory is
# shared instead of per database: one block cache for the whole process, which also accounts for
# every database's memtables under one limit (a busy database may grow its memtable to the size
# below, idle ones cost nothing).
_ROCKS_WRITE_BUFFER_BYTES = 16 << 20
ROCKS_MEMORY_BYTES = 128 << 20
_shared_memory: tuple[Cache, WriteBufferManager] | None = None


def _rocks_memory() -> tuple[Cache, WriteBufferManager]:
    """The process-wide block cache and write-buffer manager (created on first use)."""
    global _shared_memory
    if _shared_memory is None:
        # imported here: RocksDB adds ~8 MB to an engine whose pipelines keep no state
        from rocksdict import Cache, WriteBufferManager

        cache = Cache(ROCKS_MEMORY_BYTES)
        _shared_memory = (cache, WriteBufferManager.new_write_buffer_manager_with_cache(
            ROCKS_MEMORY_BYTES // 2, False, cache))
    return _shared_memory


class RocksBackend:
    """RocksDB through rocksdict (raw bytes). The changelog, not the local database, is the durable
    copy of the state, so the database keeps no write-ahead log: after a crash it holds an older
    prefix of its batches, and since the changelog position is written in the same batches, the
    restore replays from the matching point."""

    def __init__(self, path: str):
        # imported here: RocksDB adds ~8 MB to an engine whose pipelines keep no state
        from rocksdict import BlockBasedOptions, DBCompressionType, Options, Rdict, WriteOptions

        os.makedirs(path, exist_ok=True)
        cache, buffers = _rocks_memory()
        table = BlockBasedOptions()
        table.set_block_cache(cache)
        options = Options(raw_mode=True)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(buffers)
        options.set_write_buffer_size(_ROCKS_WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
        # Join buffers are written once and deleted when their window closes, under keys spread
        # over the whole key space: every level-0 -> level-1 compaction rewrites most of level 1.
        # Compacting after 8 flushed files instead of 4 halves those rewrites (reads of a key
        # look into a few more files; keys a join does not hold are not read at all).
        options.set_level_zero_file_num_compaction_trigger(8)
        # Tensors compress poorly and state is short-lived (join windows, pending batches):
        # compressing every flush and compaction costs CPU on the hot path for little disk.
        options.set_compression_type(DBCompressionType.none())
        self.path = path
        self._db = Rdict(path, options=options)
        no_log = WriteOptions()
        no_log.disable_wal = True  # type: ignore[method-assign, assignment]  # a settable attribute, not the stub's method
        self._db.set_write_options(no_log)

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        # raw_mode: keys and values are bytes, which rocksdict's stub cannot say
        for k, v in cast(Iterator[tuple[bytes, bytes]], self._db.items(from_key=prefix)):
            if not k.startswith(prefix):
                break
            yield k, v

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        # imported here: RocksDB adds ~8 MB to an engine whose pipelines keep no state
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for k, v in changes.items():
            if v is None:
                batch.delete(k)
            else:
                batch.put(k, v)
        self._db.write(batch)

    def close(self) -> None:
        self._db.close()


class PartitionState:
    """State of one (pipeline version, partition). Not thread-safe: one task owns it."""

    def __init__(self, backend: KeyValueBackend, partition: int):
        self.backend = backend
        self.partition = partition
        self._buffer: dict[bytes, bytes | None] = {}

    # -- reads and writes (through ``store(name)`` views) -------------------------------------
    def get(self, key: bytes) -> bytes | None:
        buffer = self._buffer
        if key in buffer:
            return buffer[key]
        return self.backend.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._buffer[key] = value

    def delete(self, key: bytes) -> None:
        self._buffer[key] = None

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        """Puts (bytes) and deletes (None) of many keys: one call for a flush of many writes."""
        self._buffer.update(changes)

    def items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Committed entries overlaid with the buffer, in key order."""
        merged = dict(self.backend.scan(prefix))
        for k, v in self._buffer.items():
            if k.startswith(prefix):
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
        return sorted(merged.items())

    def store(self, name: str) -> PartitionStore:
        return PartitionStore(self, name)

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self._buffer)

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        """Writes since the last checkpoint, last value per key (None: deleted)."""
        return list(self._buffer.items())

    def commit(self, changelog_position: int | None = None) -> None:
        """Apply the buffer to the database in one batch, with the changelog position if given."""
        if not self._buffer and changelog_position is None:
            return
        changes = self._buffer
        self._buffer = {}
        if changelog_position is not None:
            changes[_CHANGELOG_POSITION] = b"%d" % changelog_position
        self.backend.write(changes)

    def rollback(self) -> None:
        """Forget the writes since the last checkpoint."""
        self._buffer = {}

    # -- restore ------------------------------------------------------------------------------
    def changelog_position(self) -> int:
        """The changelog offset from which the database is not known to be up to date."""
        raw = self.backend.get(_CHANGELOG_POSITION)
        return int(raw) if raw else 0

    def apply_restored(self, records: list[tuple[bytes, bytes | None]], next_position: int) -> None:
        """Write changelog records straight to the database (they are already durable)."""
        changes: dict[bytes, bytes | None] = dict(records)
        changes[_CHANGELOG_POSITION] = b"%d" % next_position
        self.backend.write(changes)

    def wipe(self) -> None:
        """Delete every entry (the changelog was recreated: the local copy is of another log)."""
        self._buffer = {}
        self.backend.write({k: None for k, _ in self.backend.scan(b"")})

    def close(self) -> None:
        self._buffer = {}
        self.backend.close()


class PartitionStore(StateStore):
    """One step's store inside a ``PartitionState``: its keys carry the store name as a prefix."""

    def __init__(self, state: PartitionState, name: str):
        self.state = state
        self.name = name
        self._prefix = name.encode("utf-8") + SEPARATOR
        self._cut = len(self._prefix)

    def get(self, key: bytes) -> bytes | None:
        return self.state.get(self._prefix + key)

    def put(self, key: bytes, value: bytes) -> None:
        self.state.put(self._prefix + key, value)

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        prefix = self._prefix
        self.state.write({prefix + k: v for k, v in changes.items()})

    def delete(self, key: bytes) -> None:
        self.state.delete(self._prefix + key)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        cut = self._cut
        return iter([(k[cut:], v) for k, v in self.state.items(self._prefix + prefix)])

    def __len__(self) -> int:
        return len(self.state.items(self._prefix))


def rocks_partition_state(base_dir: str, partition: int) -> PartitionState:
    """The RocksDB-backed state of ``partition`` under a version's state directory."""
    return PartitionState(RocksBackend(os.path.join(base_dir, f"partition-{partition}")), partition)


def memory_partition_state(partition: int) -> PartitionState:
    return PartitionState(MemoryBackend(), partition)
