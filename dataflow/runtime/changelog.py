"""Changelog-backed state for ``KafkaRunner``: pending joins, batches and cycle counters follow
partitions that move between engine replicas and survive the loss of the local state directory
(as Kafka Streams changelogs and our Faust runtime's tables do).

Design:

* One changelog topic per pipeline version, ``<group_id>-state-changelog``, with the same
  partition count as the source topics (created explicitly: the broker does not auto-create
  reliably, environment notes defect 6; it never compacts either, defect 7, so restore replays
  every record - the last one per key wins).
* ``ChangelogStore`` wraps each store the pipeline asks for: every put/delete is applied to the
  local store AND recorded by the ``ChangelogWriter`` for the changelog partition of the input
  record being processed (``writer.current_partition``). Writes with no current record (from
  ``punctuate``) go to the partition the key was last written to / restored from; the writer
  keeps that ``(store, key) -> partition`` map (filled on put and restore, dropped on delete).
* Record format: key ``<store name>\\x00<state key>``, value = state value, or a tombstone
  (``None``) for a delete.
* The runner produces the pending changelog records before the flush that precedes each offset
  commit, so a state change is delivered before the input offset that caused it is committed
  (at-least-once covers state; replays re-apply idempotent puts).
* Restore: for each newly assigned partition the runner reads changelog partition p from the
  beginning with a short-lived, group-less consumer and applies puts/deletes to the local stores
  (idempotent, so a replica that kept its local store converges to the same state). "Finished"
  is decided by reaching at least the high watermark AND then seeing no record for
  ``idle_s``: the broker's end offsets are too low (defect 1), so the watermark is only a lower
  bound. On revoke the runner drops the local entries of revoked partitions so a replica never
  joins against state it no longer owns.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Iterable, Iterator

from dataflow.state.base import StateStore

log = logging.getLogger(__name__)

SEPARATOR = b"\x00"
RESTORE_IDLE_S = 0.5
RESTORE_TIMEOUT_S = 60.0


def changelog_topic(group_id: str) -> str:
    return f"{group_id}-state-changelog"


def changelog_key(store: str, key: bytes) -> bytes:
    return store.encode() + SEPARATOR + key


def split_changelog_key(raw: bytes) -> tuple[str, bytes]:
    store, sep, key = raw.partition(SEPARATOR)
    if not sep:
        raise ValueError(f"changelog key {raw[:60]!r} has no store separator")
    return store.decode(), key


class ChangelogWriter:
    """Collects changelog records (partition, key, value|None) until the runner drains them, and
    remembers which partition owns each state key."""

    def __init__(self) -> None:
        self.current_partition: int | None = None
        self.pending: list[tuple[int, bytes, bytes | None]] = []
        self.owner: dict[tuple[str, bytes], int] = {}
        self.stores: dict[str, "ChangelogStore"] = {}
        self.unowned_writes = 0

    def register(self, store: "ChangelogStore") -> None:
        self.stores[store.name] = store

    def record(self, store: str, key: bytes, value: bytes | None) -> None:
        partition = self.current_partition
        if partition is None:
            partition = self.owner.get((store, key))
        if partition is None:  # punctuate-time write to a key nobody recorded: nothing to follow
            self.unowned_writes += 1
            log.warning("changelog: write to %s key %r has no partition; not recorded", store, key[:60])
            if value is None:
                return
            partition = 0
        if value is None:
            self.owner.pop((store, key), None)
        else:
            self.owner[(store, key)] = partition
        self.pending.append((partition, changelog_key(store, key), value))

    def drain(self) -> list[tuple[int, bytes, bytes | None]]:
        out, self.pending = self.pending, []
        return out

    def apply(self, partition: int, raw_key: bytes, value: bytes | None) -> None:
        """Apply one restored changelog record to the local store (not re-recorded)."""
        name, key = split_changelog_key(raw_key)
        store = self.stores.get(name)
        if store is None:  # a store of another pipeline shape (or removed step): ignore
            return
        if value is None:
            store.inner.delete(key)
            self.owner.pop((name, key), None)
        else:
            store.inner.put(key, value)
            self.owner[(name, key)] = partition

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Remove local entries owned by ``partitions`` (revoked); returns how many."""
        gone = set(partitions)
        victims = [sk for sk, p in self.owner.items() if p in gone]
        for name, key in victims:
            store = self.stores.get(name)
            if store is not None:
                store.inner.delete(key)
            del self.owner[(name, key)]
        return len(victims)


class ChangelogStore(StateStore):
    """A ``StateStore`` whose writes are applied locally and recorded for the changelog."""

    def __init__(self, inner: StateStore, name: str, writer: ChangelogWriter):
        self.inner = inner
        self.name = name
        self.writer = writer
        writer.register(self)

    def get(self, key: bytes) -> bytes | None:
        return self.inner.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.inner.put(key, value)
        self.writer.record(self.name, key, value)

    def delete(self, key: bytes) -> None:
        self.inner.delete(key)
        self.writer.record(self.name, key, None)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return self.inner.items(prefix)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


class RestoreError(RuntimeError):
    """The changelog could not be read back."""


def restore_partitions(settings, topic: str, partitions: Iterable[int], writer: ChangelogWriter, *,
                       idle_s: float = RESTORE_IDLE_S, timeout_s: float = RESTORE_TIMEOUT_S,
                       read_committed: bool = False) -> int:
    """Replay changelog ``topic`` partitions into the writer's stores; returns records applied."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    parts = sorted(set(partitions))
    if not parts:
        return 0
    consumer = Consumer(settings.consumer(
        f"changelog-restore-{uuid.uuid4().hex[:12]}", offset_reset="earliest",
        **{"isolation.level": "read_committed" if read_committed else "read_uncommitted"}))
    applied = 0
    try:
        bound: dict[int, int] = {}  # offset each partition must reach (watermark: a lower bound)
        for p in parts:
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            except KafkaException as exc:
                raise RestoreError(f"cannot read the end offset of {topic}[{p}]: {exc}") from exc
            if high > 0:
                bound[p] = high - 1
        if not bound:
            return 0
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in bound])
        deadline = time.monotonic() + timeout_s
        last_record = time.monotonic()
        while True:
            now = time.monotonic()
            if now > deadline:
                raise RestoreError(f"{topic}: partitions {sorted(bound)} not read to their end within {timeout_s:g}s")
            if not bound and now - last_record >= idle_s:
                return applied
            for m in consumer.consume(500, 0.05):
                err = m.error()
                if err is not None:
                    if err.fatal():
                        raise RestoreError(f"{topic}: {err}")
                    continue
                try:
                    writer.apply(m.partition(), m.key() or b"", m.value())
                    applied += 1
                except ValueError as exc:  # not one of ours: skip it, say where
                    log.warning("changelog %s[%d]@%d skipped: %s", topic, m.partition(), m.offset(), exc)
                last_record = time.monotonic()
                if m.partition() in bound and m.offset() >= bound[m.partition()]:
                    del bound[m.partition()]
    finally:
        consumer.close()
