"""N-way windowed stream join keyed by record key, over a ``StateStore``.

Values are opaque bytes here; the step decides how to merge them. Semantics:

* **inner**: every arrival is buffered; when every other branch has buffered records with the same
  key whose record timestamps are within ``window_ms`` of the arrival, one result per combination
  is emitted (a cross product, in branch order). Buffers stay until they expire, so a key that
  repeats on a branch joins again (the reference does the same).
* **outer**: as inner while all branches are present. When a buffered record that never took part
  in a result expires (by wall clock in ``punctuate`` or by record time), ONE partial result is
  emitted from the unmatched records of that key (missing branches are ``None``); those records are
  then consumed. So a key emits either its full merge(s) or exactly one partial, never both.
  (The reference only emits partials when stream time advances - Seldon Core issue #4850; we fix that.)
* **any**: every arrival is emitted at once on its own; nothing is buffered, no merged record.

State: a key's buffered records are one store entry (with their headers only for an outer join,
the one kind that emits a buffered record's headers). Decoded entries changed since the last
``flush`` are kept in memory (``_groups``) and written to the store, encoded, by ``flush``, which
the runtime calls before every checkpoint: a key's records are decoded at most once and encoded
at most once per checkpoint, however often the key arrives. The groups the last ``flush`` wrote
stay decoded (``_recent``) until the next one: a key whose records straddle a checkpoint (its
first branch before, its second after) is not read back and decoded. The join must be the only
writer of its store, and is rebuilt over the store when uncommitted state is dropped.

Expiry: a buffered record is dropped once ``now_ms >= wall_ms + window_ms`` (wall clock) or once
its timestamp falls more than ``window_ms`` behind the join's stream time (max timestamp seen).
A result's headers are those of the arrival that produced it; its timestamp is the max of its parts.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from heapq import heappop, heappush

from dataflow.joins.entries import (
    GROUP_PREFIX,
    Entry,
    decode_entries,
    encode_entries,
    group_key,
    key_of_group,
)
from dataflow.joins.types import JoinType
from dataflow.records import Record
from dataflow.state.base import StateStore

log = logging.getLogger(__name__)

_STREAM_TIME_KEY = b"t\x00stream-time"
# The headers of the records an inner join buffers: shared, never changed (decoding makes new lists).
_NO_HEADERS: list[tuple[str, bytes]] = []


def _due_at(due: dict[int, list[bytes]], times: list[int], t: int, gkey: bytes) -> None:
    """Index ``gkey`` at time ``t``: in t's bucket, and t in the heap of bucket times if new."""
    bucket = due.get(t)
    if bucket is None:
        due[t] = [gkey]
        heappush(times, t)
    else:
        bucket.append(gkey)


@dataclass(slots=True)
class JoinResult:
    key: str | None
    values: list[bytes | None]        # one slot per branch, in branch order; None = branch missing
    headers: list[tuple[str, bytes]]
    timestamp: int
    partition: int = 0

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.values)


class StreamJoin:
    def __init__(self, store: StateStore, *, branches: int, kind: JoinType, window_ms: int, name: str = "join"):
        if branches < 2 and kind is not JoinType.ANY:
            raise ValueError(f"join {name} needs at least 2 branches, got {branches}")
        self.store = store
        self.branches = branches
        self.kind = kind
        self.window_ms = int(window_ms)
        self.name = name
        raw = store.get(_STREAM_TIME_KEY)
        self.stream_time = int(raw) if raw else -(2 ** 62)
        self._stream_time_changed = False
        self._buffer_headers = kind is JoinType.OUTER
        self._groups: dict[bytes, list[Entry]] = {}   # decoded groups changed since the last flush
        # The groups the last flush wrote, decoded, as the store holds them (an empty list: deleted).
        # A group leaves this map when it is read, since its entries may then change in place.
        self._recent: dict[bytes, list[Entry]] = {}
        self._stored: set[bytes] = set()   # groups the store holds: any other group is empty, unread
        # Expiry indexes (in memory, rebuilt from the store on start): per group with buffered
        # records, at least one entry under a wall expiry no later than its earliest record's wall
        # expiry, and one under a record timestamp no later than its earliest record's timestamp.
        # An arrival adds an entry only when it would expire before what the group already has;
        # punctuate re-reads a due group and indexes what is left of it. Entries may be stale
        # (group rewritten since): they only cost a lookup.
        # Each index is a bucket (list of groups) per time and a heap of the bucket times: records
        # of a poll share its wall clock and often their timestamps, so most arrivals append to
        # an existing bucket (no heap push, and no per-entry tuple for the collector to track).
        self._wall_due: dict[int, list[bytes]] = {}
        self._wall_times: list[int] = []
        self._time_due: dict[int, list[bytes]] = {}
        self._time_times: list[int] = []
        self._buffered = 0  # records held in their windows
        self.expired = 0   # buffered records dropped at the end of their window (metrics)
        for gkey, raw in store.items(GROUP_PREFIX):
            entries = decode_entries(raw)
            self._stored.add(gkey)
            if entries:
                self._buffered += len(entries)
                _due_at(self._wall_due, self._wall_times, min(e.wall_ms for e in entries) + self.window_ms, gkey)
                _due_at(self._time_due, self._time_times, min(e.timestamp for e in entries), gkey)

    # -- arrivals ---------------------------------------------------------------------------
    def add(self, branch: int, record: Record, now_ms: int) -> list[JoinResult]:
        return self.add_value(branch, record.key, record.value, record.headers, record.timestamp,
                              record.partition, now_ms)

    def add_value(self, branch: int, key: str | None, value: bytes | None, headers: list[tuple[str, bytes]],
                  ts: int, partition: int, now_ms: int) -> list[JoinResult]:
        """``add`` of a record given by its fields (the step's hot path builds no ``Record``)."""
        if not 0 <= branch < self.branches:
            raise ValueError(f"join {self.name}: branch {branch} out of range 0..{self.branches - 1}")
        if self.kind is JoinType.ANY:
            values: list[bytes | None] = [None] * self.branches
            values[branch] = value
            return [JoinResult(key, values, list(headers), ts, partition)]

        if ts > self.stream_time:
            self.stream_time = ts
            self._stream_time_changed = True
        gkey = group_key(key)
        entries = self._groups.get(gkey)
        if entries is None:   # changed from now on: kept decoded until the next flush
            entries = self._groups[gkey] = self._unchanged(gkey)
        # A buffered record's headers are only read by an outer join's partial result (every
        # other result carries the arrival's headers): other joins buffer, encode and log none.
        # An outer join keeps the record's header list (records are not changed once made;
        # nothing in the engine mutates a header list in place), as do results.
        arrival = Entry(branch, ts, now_ms, value, headers if self._buffer_headers else _NO_HEADERS)
        window = self.window_ms
        if not entries:   # the group's first record: nothing to join
            self._index(gkey, now_ms, ts)
            entries.append(arrival)
            self._buffered += 1
            return []

        results: list[JoinResult] = []
        horizon = self.stream_time - window
        for e in entries:
            if e.timestamp < horizon:   # some buffered records fell behind the stream time
                stale = [e for e in entries if e.timestamp < horizon]
                if self.kind is JoinType.OUTER:
                    results.extend(self._partials(key, entries, stale))
                entries[:] = [e for e in entries if e.timestamp >= horizon]
                self._buffered -= len(stale)
                break
        if entries:   # index the arrival only if it expires before everything in the group
            first = entries[0]
            if now_ms < first.wall_ms:
                _due_at(self._wall_due, self._wall_times, now_ms + window, gkey)
            if ts < first.timestamp:
                _due_at(self._time_due, self._time_times, ts, gkey)
        else:
            self._index(gkey, now_ms, ts)

        if self.branches == 2:
            for e in entries:
                if e.branch != branch and -window <= e.timestamp - ts <= window:
                    et = e.timestamp
                    results.append(JoinResult(key, [e.value, value] if e.branch < branch else [value, e.value],
                                              headers, ts if ts > et else et, partition))
                    e.matched = arrival.matched = True
        else:
            candidates: list[list[Entry]] = []
            for b in range(self.branches):
                if b == branch:
                    candidates.append([arrival])
                else:
                    candidates.append([e for e in entries if e.branch == b and abs(e.timestamp - ts) <= window])
            if all(candidates):
                for combo in itertools.product(*candidates):
                    results.append(JoinResult(key, [e.value for e in combo], headers,
                                              max(e.timestamp for e in combo), partition))
                    for e in combo:
                        e.matched = True
        entries.append(arrival)
        self._buffered += 1
        return results

    # -- state ------------------------------------------------------------------------------
    def _read(self, gkey: bytes) -> list[Entry]:
        """A group's records as the store holds them (without reading groups it does not hold)."""
        if gkey not in self._stored:
            return []
        raw = self.store.get(gkey)
        return decode_entries(raw) if raw else []

    def _unchanged(self, gkey: bytes) -> list[Entry]:
        """A group not changed since the last flush: kept decoded by that flush, else read."""
        entries = self._recent.pop(gkey, None)
        return entries if entries is not None else self._read(gkey)

    def _entries(self, gkey: bytes) -> list[Entry]:
        entries = self._groups.get(gkey)
        return entries if entries is not None else self._unchanged(gkey)

    def _index(self, gkey: bytes, now_ms: int, ts: int) -> None:
        """Index a group whose earliest record arrived at ``now_ms`` with timestamp ``ts``."""
        _due_at(self._wall_due, self._wall_times, now_ms + self.window_ms, gkey)
        _due_at(self._time_due, self._time_times, ts, gkey)

    def flush(self) -> None:
        """Write the groups changed since the last flush (and the stream time) to the store."""
        stored = self._stored
        add = stored.add
        changes: dict[bytes, bytes | None] = {}   # written with one call to the store
        for gkey, entries in self._groups.items():
            if entries:
                changes[gkey] = encode_entries(entries)
                add(gkey)
            elif gkey in stored:
                changes[gkey] = None
                stored.discard(gkey)
        self._recent = self._groups
        self._groups = {}
        if self._stream_time_changed:
            changes[_STREAM_TIME_KEY] = str(self.stream_time).encode()
            self._stream_time_changed = False
        if changes:
            self.store.write(changes)

    # -- expiry -----------------------------------------------------------------------------
    def _expired_by_record_time(self, e: Entry) -> bool:
        return e.timestamp < self.stream_time - self.window_ms

    def _expired(self, e: Entry, now_ms: int) -> bool:
        return now_ms >= e.wall_ms + self.window_ms or self._expired_by_record_time(e)

    def next_deadline(self) -> int | None:
        """Wall-clock time at which ``punctuate`` next has work (None if nothing is buffered)."""
        return self._wall_times[0] if self._wall_times else None

    def punctuate(self, now_ms: int) -> list[JoinResult]:
        """Drop expired buffers; for outer joins emit the one partial result of unmatched keys.
        Only groups with a due index entry are read, so an idle tick costs nothing."""
        if self.kind is JoinType.ANY:
            return []
        wall_due: set[bytes] = set()
        times = self._wall_times
        while times and times[0] <= now_ms:
            wall_due.update(self._wall_due.pop(heappop(times)))
        horizon = self.stream_time - self.window_ms
        time_due: set[bytes] = set()
        times = self._time_times
        while times and times[0] < horizon:
            time_due.update(self._time_due.pop(heappop(times)))
        results: list[JoinResult] = []
        for gkey in sorted(wall_due | time_due):
            entries = self._entries(gkey)
            if not entries:
                continue
            expired = [e for e in entries if self._expired(e, now_ms)]
            if expired:
                if self.kind is JoinType.OUTER:
                    results.extend(self._partials(key_of_group(gkey), entries, expired))
                self.expired += len(expired)
                self._buffered -= len(expired)
                entries = [e for e in entries if not self._expired(e, now_ms)]
                self._groups[gkey] = entries
            if entries:   # what is left keeps an index entry of each kind popped
                if gkey in wall_due:
                    _due_at(self._wall_due, self._wall_times, min(e.wall_ms for e in entries) + self.window_ms, gkey)
                if gkey in time_due:
                    _due_at(self._time_due, self._time_times, min(e.timestamp for e in entries), gkey)
        return results

    def _partials(self, key: str | None, entries: list[Entry], expired: list[Entry]) -> list[JoinResult]:
        out: list[JoinResult] = []
        for e in expired:
            if e.matched:
                continue
            chosen: list[Entry | None] = [None] * self.branches
            chosen[e.branch] = e
            for other in entries:   # latest unmatched record of each other branch within the window
                if other.matched or other.branch == e.branch:
                    continue
                if abs(other.timestamp - e.timestamp) <= self.window_ms:
                    chosen[other.branch] = other
            parts = [c for c in chosen if c is not None]
            last = max(parts, key=lambda c: (c.wall_ms, entries.index(c)))
            out.append(JoinResult(key, [c.value if c else None for c in chosen], list(last.headers),
                                  max(c.timestamp for c in parts)))
            for c in parts:
                c.matched = True
        return out

    @property
    def buffered(self) -> int:
        """Records held in their window: an O(1) read, safe from another thread (metrics)."""
        return self._buffered

    def __len__(self) -> int:
        """Buffered records (for tests and metrics)."""
        stored = sum(len(decode_entries(raw)) for gkey, raw in self.store.items(GROUP_PREFIX)
                     if gkey not in self._groups)
        return stored + sum(len(entries) for entries in self._groups.values())
