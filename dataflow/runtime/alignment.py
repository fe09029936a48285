"""Record-time order across the topics a join reads.

A join compares record timestamps: its stream time is the newest timestamp it has seen, and a
buffered record that falls more than the window behind it is dropped. A consumer hands the topics
of a partition over in runs of one topic (a fetch returns up to a partition's fetch size of each,
and the embedded broker answers thousands of records of one topic at a time). So when both topics
have a backlog whose record times span more than the window, the run of one topic pushes stream
time ahead and the other topic's records then find their partners already dropped: with 300 keys
one second apart on both branches and a 60 s window, 61 joined instead of 300. Kafka Streams,
which the reference is built on, avoids this by taking a task's records in timestamp order across
its input partitions; this module does the same for the runtimes.

Rule, per partition and per group of topics that meet in one join (or trigger gate): a record of
topic X waits until every other topic Y of its group has been read at least up to its timestamp,
or Y has nothing more to read (its consumer position is at the end the last fetch reported). What
is released is merged in timestamp order, each topic's records keeping their offset order. A
record never waits longer than ``max_wait_ms`` without progress, and at most ``max_held`` records
of a topic and partition wait (the oldest go first), so a silent topic delays nothing for long
and memory stays bounded.

Side effect, wanted: a group's records meet between two checkpoints instead of straddling one, so
its join state is written to the changelog once instead of twice.

Held records are not processed, so their offsets are not committed: a runtime that rewinds drops
what it holds (``drop``) and seeks those partitions back to their committed offsets; one that
loses a partition drops what it holds of it, and the partition's next owner reads it again.
Pure logic: the runtime says how to read a record's topic, partition and timestamp, and whether a
topic partition has more to read.
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Generic, TypeVar

R = TypeVar("R")
TopicPartitionKey = tuple[str, int]

MAX_HELD = 20_000
MAX_WAIT_MS = 1_000
_OLDEST = -(2 ** 63)
_NEWEST = 2 ** 63
_by_time = itemgetter(0)
_record = itemgetter(1)


def partner_topics(groups: Iterable[Iterable[str]]) -> dict[str, frozenset[str]]:
    """Topic -> the other topics it must be aligned with (from every group it is in)."""
    partners: dict[str, set[str]] = {}
    for group in groups:
        topics = set(group)
        if len(topics) < 2:
            continue
        for topic in topics:
            partners.setdefault(topic, set()).update(topics - {topic})
    return {topic: frozenset(others) for topic, others in partners.items()}


class TimestampAligner(Generic[R]):
    """Holds back records of a topic that ran ahead of its partners (see the module docstring)."""

    def __init__(self, groups: Iterable[Iterable[str]], describe: Callable[[R], tuple[str, int, int]], *,
                 max_held: int = MAX_HELD, max_wait_ms: int = MAX_WAIT_MS):
        """``groups``: sets of topics whose records meet in one step. ``describe``: a record's
        (topic, partition, timestamp in ms)."""
        self._partners = partner_topics(groups)
        self._describe = describe
        self.max_held = max_held
        self.max_wait_ms = max_wait_ms
        self._held: dict[TopicPartitionKey, list[tuple[int, R]]] = {}   # oldest first
        self._newest: dict[TopicPartitionKey, int] = {}     # newest timestamp read, held or not
        self._waiting_since: dict[TopicPartitionKey, int] = {}  # wall ms of the last progress

    @property
    def active(self) -> bool:
        """Whether any topic needs aligning (a pipeline without joins of two topics needs none)."""
        return bool(self._partners)

    @property
    def holding(self) -> bool:
        """Whether any record is held now."""
        return bool(self._held)

    def align(self, records: list[R], now_ms: int, has_more: Callable[[str, int], bool]) -> list[R]:
        """What of ``records`` and of the records held so far can be processed now, in order.

        ``has_more(topic, partition)``: whether that topic partition has records not read yet
        (say True when unknown: the wait is bounded)."""
        partners = self._partners
        if not partners:
            return records
        describe, held, newest = self._describe, self._held, self._newest
        out: list[R] = []
        # Records come in runs of one topic partition: its queue and newest timestamp are looked
        # up once per run and kept in locals meanwhile.
        run_topic: str | None = None
        run_partition = -1
        queue: list[tuple[int, R]] | None = None   # None: the run's topic is not aligned
        key: TopicPartitionKey = ("", -1)          # the run's, while queue is set
        latest = _OLDEST
        for r in records:
            topic, partition, ts = describe(r)
            if topic != run_topic or partition != run_partition:
                if queue is not None:
                    newest[key] = latest
                run_topic, run_partition = topic, partition
                if topic in partners:
                    key = (topic, partition)
                    queue = held.get(key)
                    if queue is None:
                        queue = held[key] = []
                        self._waiting_since[key] = now_ms
                    latest = newest.get(key, _OLDEST)
                else:
                    queue = None
            if queue is None:
                out.append(r)
                continue
            # Held under the newest timestamp read so far of its topic partition, which never
            # goes down: the queue stays sorted, so a release is a bisection and the merge of
            # several released runs keeps each run in offset order.
            if ts > latest:
                latest = ts
            queue.append((latest, r))
        if queue is not None:
            newest[key] = latest
        if not held:
            return out
        released: list[tuple[int, R]] = []
        runs = 0
        for key in list(held):
            run = self._release(key, now_ms, has_more)
            if run:
                released += run
                runs += 1
        if runs > 1:   # the runs merged by time: a stable sort of sorted runs (merged in C)
            released.sort(key=_by_time)
        out += map(_record, released)
        return out

    def _release(self, key: TopicPartitionKey, now_ms: int,
                 has_more: Callable[[str, int], bool]) -> list[tuple[int, R]]:
        """The records of ``key`` that may go now, oldest first."""
        topic, partition = key
        queue = self._held[key]
        bound = _NEWEST   # release what is no newer than every partner has been read to
        for other in self._partners[topic]:
            other_key = (other, partition)
            if other_key not in self._held and not has_more(other, partition):
                continue   # read to its end: nothing of it can come before these records
            seen = self._newest.get(other_key, _OLDEST)
            if seen < bound:
                bound = seen
        if now_ms - self._waiting_since[key] >= self.max_wait_ms:
            cut = len(queue)   # waited long enough without progress: a partner is silent
        else:
            cut = max(bisect_right(queue, bound, key=_by_time), len(queue) - self.max_held)
        if cut == len(queue):
            del self._held[key]
            del self._waiting_since[key]
            return queue
        if not cut:
            return []
        self._held[key] = queue[cut:]
        self._waiting_since[key] = now_ms
        return queue[:cut]

    def drop(self, keys: Iterable[TopicPartitionKey] | None = None) -> set[TopicPartitionKey]:
        """Forget what is held of the (topic, partition) ``keys``, or of all: after a rewind, or
        for revoked partitions. Returns the keys that held records: the consumer has read past
        them, so a runtime that keeps reading such a partition must seek it back to its
        committed offset, or they are never processed."""
        if keys is None:
            had = set(self._held)
            self._held.clear()
            self._waiting_since.clear()
            self._newest.clear()
            return had
        had = set()
        for key in keys:
            if self._held.pop(key, None) is not None:
                had.add(key)
            self._waiting_since.pop(key, None)
            self._newest.pop(key, None)
        return had
