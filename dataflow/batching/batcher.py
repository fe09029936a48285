"""Step-level request batching, with the window and rolling modes the reference never built.

One pending batch per partition, kept in the step's ``StateStore`` so a persistent store carries it
across restarts (the reference keeps it in memory and loses it). Each record's value is a serialized
``ModelInferRequest``; batches are merged with :func:`dataflow.oip.merge_batch`.

Rows. A batch's size is ``shape[0]`` of its merged *first* input -- the tensor name that appears first
across the pending requests -- exactly as the reference measures it.

Modes:

* ``size`` (reference behaviour): each request joins the partition's pending batch; once the batch has
  ``>= size`` rows it is emitted and the partition starts afresh. A single request of ``>= size`` rows is
  emitted at once, unsplit.
* ``window_ms``: a partial batch is emitted when ``now_ms - opened_at >= window_ms`` (wall clock, checked
  by :meth:`Batcher.punctuate`; ``opened_at`` is the ``now_ms`` of the batch's first request). With both
  ``size`` and ``window_ms``, whichever comes first. With only ``window_ms``, batches close on time alone.
* ``rolling`` (needs ``size``): a sliding batch. The partition keeps the most recent requests, trimmed
  to the shortest suffix still holding ``>= size`` rows; whenever it holds ``>= size`` rows after a
  request arrives, the merge of those requests is emitted and *kept*. With one-row requests that means
  every request from the ``size``-th on is answered with itself plus the ``size - 1`` before it.
  Requests before the window first fills are not answered unless ``window_ms`` is set: then, once the
  oldest kept request is ``window_ms`` old, a window that never filled is emitted as a partial batch, and
  the window is cleared either way (so a quiet partition starts the next window from scratch).

Emitted records: topic/partition/key/headers of the record that completed the batch (for a time-based
flush: the batch's last record), ``timestamp`` = the largest timestamp in the batch, value = the merged
request. Bad input (undecodable value, a tensor without dimensions, a tensor whose datatype or
non-batch dimensions differ from the pending batch) raises :class:`dataflow.oip.CodecError` *before*
the state changes, so one bad record never poisons or loses a pending batch.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, cast

from tritonclient.grpc.service_pb2 import ModelInferRequest

from dataflow.headers import Headers
from dataflow.oip import CodecError, merge_batch, parse_request, strip_schema_prefix
from dataflow.records import Record
from dataflow.state.base import StateStore

__all__ = ["Batcher"]


@dataclass
class _Entry:
    """One pending request: its state-store sequence, arrival (wall clock), record timestamp and
    rows per tensor name in first-appearance order."""

    seq: int
    arrived_ms: int
    timestamp: int
    rows: list[tuple[str, int]]

    def to_json(self) -> list[Any]:
        return [self.seq, self.arrived_ms, self.timestamp, [list(r) for r in self.rows]]

    @classmethod
    def from_json(cls, data: list[Any]) -> _Entry:
        return cls(data[0], data[1], data[2], [(n, r) for n, r in data[3]])


@dataclass
class _Pending:
    """The partition's pending batch as recorded in the store's meta entry."""

    opened_ms: int
    next_seq: int = 0
    entries: list[_Entry] = field(default_factory=list)
    schema: dict[str, list[Any]] = field(default_factory=dict)  # name -> [datatype, shape[1:]]
    last: dict[str, Any] = field(default_factory=dict)  # topic/key/headers/partition of the newest record

    def rows(self) -> int:
        return _rows(self.entries)

    def to_bytes(self) -> bytes:
        return json.dumps({
            "opened": self.opened_ms, "next": self.next_seq,
            "entries": [e.to_json() for e in self.entries],
            "schema": self.schema, "last": self.last,
        }, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> _Pending:
        d = json.loads(data)
        return cls(d["opened"], d["next"], [_Entry.from_json(e) for e in d["entries"]], d["schema"], d["last"])


def _rows(entries: list[_Entry]) -> int:
    """Rows of the merged first input: the first tensor name seen, summed over all entries."""
    first = next((e.rows[0][0] for e in entries if e.rows), None)
    if first is None:
        return 0
    return sum(r for e in entries for n, r in e.rows if n == first)


def _record_meta(record: Record) -> dict[str, Any]:
    return {
        "topic": record.topic, "key": record.key, "partition": record.partition,
        "headers": [[k, None if v is None else base64.b64encode(v).decode()] for k, v in record.headers],
    }


def _record_from_meta(meta: dict[str, Any], value: bytes, timestamp: int) -> Record:
    headers = [(k, None if v is None else base64.b64decode(v)) for k, v in meta["headers"]]
    # Headers of a Record are bytes (normalised on the way in), so a stored value is never null.
    return Record(topic=meta["topic"], key=meta["key"], value=value, headers=cast(Headers, headers),
                  timestamp=timestamp, partition=meta["partition"])


class Batcher:
    """Accumulates requests per partition and emits merged batches (see module docstring)."""

    def __init__(self, store: StateStore, *, size: int | None, window_ms: int | None,
                 rolling: bool = False, name: str = "batch"):
        size = size or None  # the reference treats size 0 as "no batching by size"
        window_ms = window_ms or None
        if size is not None and size < 0:
            raise ValueError(f"batch size must be positive, got {size}")
        if window_ms is not None and window_ms < 0:
            raise ValueError(f"batch window must be positive, got {window_ms} ms")
        if size is None and window_ms is None:
            raise ValueError("a Batcher needs a size, a window_ms, or both")
        if rolling and size is None:
            raise ValueError("a rolling batch needs a size")
        self.store = store
        self.size = size
        self.window_ms = window_ms
        self.rolling = rolling
        self.name = name
        self._prefix = name.encode() + b"\x00"
        self._pending: dict[int, _Pending] = self._load()

    # ------------------------------------------------------------------ store layout

    def _meta_key(self, partition: int) -> bytes:
        return self._prefix + b"%08d\x00m" % partition

    def _entry_key(self, partition: int, seq: int) -> bytes:
        return self._prefix + b"%08d\x00r%016d" % (partition, seq)

    def _load(self) -> dict[int, _Pending]:
        pending = {}
        for key, value in list(self.store.items(self._prefix)):
            if key.endswith(b"\x00m"):
                partition = int(key[len(self._prefix):-2])
                pending[partition] = _Pending.from_bytes(value)
        return pending

    def _requests(self, partition: int, entries: list[_Entry]) -> list[ModelInferRequest]:
        out = []
        for e in entries:
            data = self.store.get(self._entry_key(partition, e.seq))
            if data is None:
                raise RuntimeError(f"batch store {self.name!r} lost request {e.seq} of partition {partition}")
            out.append(ModelInferRequest.FromString(data))
        return out

    def _clear(self, partition: int, pending: _Pending) -> None:
        for e in pending.entries:
            self.store.delete(self._entry_key(partition, e.seq))
        self.store.delete(self._meta_key(partition))
        del self._pending[partition]

    # ------------------------------------------------------------------ validation

    def _entry_for(self, request: ModelInferRequest, pending: _Pending | None) -> tuple[_Entry, dict[str, list[Any]]]:
        """Rows per name and the schema additions; raises CodecError if the request cannot be merged."""
        schema = pending.schema if pending else {}
        added: dict[str, list[Any]] = {}
        rows: dict[str, int] = {}
        for t in request.inputs:
            if len(t.shape) == 0:
                raise CodecError(f"batch {self.name!r}: tensor {t.name!r} has no dimensions to batch on")
            signature = [t.datatype, list(t.shape[1:])]
            known = schema.get(t.name) or added.get(t.name)
            if known is None:
                added[t.name] = signature
            elif known[0] != signature[0]:
                raise CodecError(f"batch {self.name!r}: tensor {t.name!r} is {t.datatype} "
                                 f"but the pending batch has {known[0]}")
            elif known[1] != signature[1]:
                raise CodecError(f"batch {self.name!r}: tensor {t.name!r} has shape {list(t.shape)}; "
                                 f"the pending batch needs [n, {', '.join(map(str, known[1]))}]")
            rows[t.name] = rows.get(t.name, 0) + int(t.shape[0])
        return _Entry(0, 0, 0, list(rows.items())), added

    # ------------------------------------------------------------------ public API

    def add(self, record: Record, now_ms: int) -> list[Record]:
        """Take one request record; return the batch it completes (0 or 1 records)."""
        request = parse_request(record.value)
        assert record.value is not None  # parse_request refuses a tombstone
        value = bytes(strip_schema_prefix(record.value))  # what we store: no need to re-serialize
        partition = record.partition
        pending = self._pending.get(partition)
        entry, added = self._entry_for(request, pending)
        if pending is None:
            pending = _Pending(opened_ms=now_ms)
        entry.seq, entry.arrived_ms, entry.timestamp = pending.next_seq, now_ms, record.timestamp
        entries = pending.entries + [entry]

        if self.rolling:
            return self._add_rolling(partition, pending, entries, entry, added, request, value, record)

        if self.size is not None and _rows(entries) >= self.size:
            batch = self._requests(partition, pending.entries) + [request]
            if partition in self._pending:
                self._clear(partition, pending)
            timestamp = max(e.timestamp for e in entries)
            return [record.evolve(value=merge_batch(batch).SerializeToString(), timestamp=timestamp)]

        self.store.put(self._entry_key(partition, entry.seq), value)
        pending.entries = entries
        pending.next_seq += 1
        pending.schema.update(added)
        pending.last = _record_meta(record)
        self.store.put(self._meta_key(partition), pending.to_bytes())
        self._pending[partition] = pending
        return []

    def _add_rolling(self, partition: int, pending: _Pending, entries: list[_Entry], entry: _Entry,
                     added: dict[str, list[Any]], request: ModelInferRequest, value: bytes,
                     record: Record) -> list[Record]:
        size = self.size
        assert size is not None  # __init__ refuses a rolling batch without a size
        dropped = []
        while len(entries) > 1 and _rows(entries[1:]) >= size:
            dropped.append(entries.pop(0))
        kept_old = [e for e in entries if e is not entry]
        batch = self._requests(partition, kept_old) + [request] if _rows(entries) >= size else None

        self.store.put(self._entry_key(partition, entry.seq), value)
        for e in dropped:
            self.store.delete(self._entry_key(partition, e.seq))
        pending.entries = entries
        pending.opened_ms = entries[0].arrived_ms
        pending.next_seq += 1
        pending.schema.update(added)
        pending.last = _record_meta(record)
        self.store.put(self._meta_key(partition), pending.to_bytes())
        self._pending[partition] = pending
        if batch is None:
            return []
        timestamp = max(e.timestamp for e in entries)
        return [record.evolve(value=merge_batch(batch).SerializeToString(), timestamp=timestamp)]

    def punctuate(self, now_ms: int) -> list[Record]:
        """Emit partial batches whose window has elapsed by ``now_ms`` (no-op without ``window_ms``)."""
        if self.window_ms is None:
            return []
        out = []
        for partition in sorted(self._pending):
            pending = self._pending[partition]
            if now_ms - pending.opened_ms < self.window_ms:
                continue
            emit = not self.rolling or self.size is None or pending.rows() < self.size
            record = self._release(partition, pending) if emit else None
            self._clear(partition, pending)
            if record is not None:
                out.append(record)
        return out

    def next_deadline(self) -> int | None:
        """Wall-clock ms at which :meth:`punctuate` next has work, or None."""
        if self.window_ms is None or not self._pending:
            return None
        return min(p.opened_ms for p in self._pending.values()) + self.window_ms

    def drain(self) -> list[Record]:
        """Emit every pending batch now, whatever its size or age (shutdown, tests)."""
        out = []
        for partition in sorted(self._pending):
            pending = self._pending[partition]
            emit = not self.rolling or self.size is None or pending.rows() < self.size
            record = self._release(partition, pending) if emit else None
            self._clear(partition, pending)
            if record is not None:
                out.append(record)
        return out

    def pending_batch(self, partition: int) -> ModelInferRequest | None:
        """The merged request waiting on ``partition`` (None if nothing is pending)."""
        pending = self._pending.get(partition)
        if pending is None or not pending.entries:
            return None
        return merge_batch(self._requests(partition, pending.entries))

    def pending_rows(self) -> int:
        """Rows waiting in pending batches (metrics; safe to read from another thread)."""
        return sum(p.rows() for p in list(self._pending.values()))

    def pending_partitions(self) -> list[int]:
        return sorted(self._pending)

    def _release(self, partition: int, pending: _Pending) -> Record | None:
        if not pending.entries:
            return None
        merged = merge_batch(self._requests(partition, pending.entries))
        timestamp = max(e.timestamp for e in pending.entries)
        return _record_from_meta(pending.last, merged.SerializeToString(), timestamp)
