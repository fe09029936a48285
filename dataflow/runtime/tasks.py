"""Partition tasks: the unit a runtime runs, one per assigned input partition of a pipeline version.

A task owns the state of its partition (``dataflow.state.partition.PartitionState``) and the
processors built over it. The order is what makes state correct when partitions move:

1. on assignment the partition's state is opened and restored (the runtime reads the changelog),
2. only then are the partition's processors built, so nothing they cache at construction (a
   batcher's pending batches, a join's expiry index, cycle-counter expiries) can be stale,
3. on revocation the processors are dropped and the state is closed but kept on disk.

Every source topic of a version has the same partition count and a request's records share a
partition on every topic (the key starts with the partition number), so records of partition p of
any source topic go to task p, and everything a task writes, punctuation included, is state of p.

This module does no I/O besides the state databases: runtimes (``KafkaRunner``, the Faust worker)
drive it and move records and changelog entries over Kafka.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from dataflow.records import Record
from dataflow.state.base import StateStore, StoreFactory
from dataflow.state.memory import MemoryStore
from dataflow.state.partition import PartitionState
from dataflow.topology.compiled import CompiledPipeline
from dataflow.topology.stats import StepSnapshot

log = logging.getLogger(__name__)

# store_factory -> processors; a runtime binds the pipeline message and settings into it.
BuildPipeline = Callable[[StoreFactory], CompiledPipeline]
# partition -> its (opened, not yet restored) state
OpenState = Callable[[int], PartitionState]
# the states of newly assigned partitions -> (restores them in place)
RestoreStates = Callable[[list[PartitionState]], None]
# (partition, key, value or None for a delete): one changelog entry
ChangelogEntry = tuple[int, bytes, bytes | None]


def probe(build: BuildPipeline) -> tuple[CompiledPipeline, bool]:
    """Build the pipeline once over throw-away memory stores: the result (it validates the message
    and tells the topics) and whether it asked for any store (joins, triggers, batches, cycle
    counters). Stateless versions need no changelog, restore or database."""
    names: list[str] = []

    def recording(name: str) -> StateStore:
        names.append(name)
        return MemoryStore(name)

    pipeline = build(recording)
    return pipeline, bool(names)


def _no_state(name: str) -> StateStore:
    raise RuntimeError(f"store {name!r} asked for by a pipeline compiled as stateless")


class PartitionTask:
    """One partition: its state (None for a stateless version) and its processors."""

    def __init__(self, partition: int, state: PartitionState | None, build: BuildPipeline,
                 replace: Callable[[PartitionTask, CompiledPipeline], None] | None = None):
        self.partition = partition
        self.state = state
        self._build = build
        self._replace = replace
        self.pipeline = self._processors()

    def _processors(self) -> CompiledPipeline:
        return self._build(self.state.store if self.state is not None else _no_state)

    def process(self, record: Record, now_ms: int) -> list[Record]:
        return self.pipeline.process(record, now_ms)

    def punctuate(self, now_ms: int) -> list[Record]:
        return self.pipeline.punctuate(now_ms)

    def changelog_entries(self) -> list[ChangelogEntry]:
        """The state changes since the last checkpoint, after processors have written what they
        keep in memory (``flush``, for pipelines that cache) to their stores."""
        if self.state is None:
            return []
        flush = getattr(self.pipeline, "flush", None)
        if flush is not None:
            flush()
        p = self.partition
        return [(p, k, v) for k, v in self.state.changes()]

    def commit(self, changelog_position: int | None = None) -> None:
        if self.state is not None:
            self.state.commit(changelog_position)

    def rollback(self) -> None:
        """Drop uncommitted writes and rebuild the processors over the committed state."""
        if self.state is not None:
            self.state.rollback()
            fresh = self._processors()
            if self._replace is not None:
                self._replace(self, fresh)
            else:
                self.pipeline = fresh

    def close(self) -> None:
        if self.state is not None:
            self.state.close()


class PartitionTasks:
    """The tasks of one pipeline version in this process, by partition."""

    def __init__(self, build: BuildPipeline, open_state: OpenState | None):
        self._build = build
        self._open_state = open_state
        self.tasks: dict[int, PartitionTask] = {}
        # Metrics: the counters of processors dropped (revoked partitions, rollbacks) are kept
        # here, so the per-step totals never go down. The lock guards only these hand-overs and
        # the metrics read, never the record path.
        self._retired: dict[str, StepSnapshot] = {}
        self._metrics_lock = threading.Lock()

    @property
    def stateful(self) -> bool:
        return self._open_state is not None

    def __contains__(self, partition: int) -> bool:
        return partition in self.tasks

    def get(self, partition: int) -> PartitionTask | None:
        return self.tasks.get(partition)

    def assign(self, partitions: Iterable[int], restore: RestoreStates | None = None) -> list[int]:
        """Create tasks for the partitions not already owned: open and restore their state first.
        Returns the new partitions. If ``restore`` raises, nothing is assigned."""
        new = sorted(set(partitions) - set(self.tasks))
        if not new:
            return []
        states: list[PartitionState] = []
        if self._open_state is not None:
            try:
                for p in new:
                    states.append(self._open_state(p))
                if restore is not None:
                    restore(states)
            except BaseException:
                for s in states:
                    s.close()
                raise
        by_partition = {s.partition: s for s in states}
        built = {p: PartitionTask(p, by_partition.get(p), self._build, self._replace) for p in new}
        with self._metrics_lock:
            self.tasks.update(built)
        return new

    def revoke(self, partitions: Iterable[int]) -> list[PartitionTask]:
        """Remove the tasks of ``partitions`` and close their state (kept on disk). The caller
        checkpoints before revoking. Returns the closed tasks."""
        with self._metrics_lock:
            gone = [self.tasks.pop(p) for p in sorted(set(partitions)) if p in self.tasks]
            for task in gone:
                self._retire_locked(task.pipeline)
        for task in gone:
            task.close()
        return gone

    def _replace(self, task: PartitionTask, fresh: CompiledPipeline) -> None:
        """A task's processors are rebuilt (rollback): keep the old ones' counters."""
        with self._metrics_lock:
            self._retire_locked(task.pipeline)
            task.pipeline = fresh

    def _retire_locked(self, pipeline: CompiledPipeline) -> None:
        snapshots = getattr(pipeline, "step_snapshots", None)
        if snapshots is None:   # a runtime-supplied pipeline without step metrics
            return
        for step, snap in snapshots().items():
            self._retired.setdefault(step, StepSnapshot.empty()).add(snap, gauges=False)

    def step_totals(self) -> dict[str, StepSnapshot]:
        """Per step: counters over every processor this version has had in this process, and the
        buffered state of the live ones (``dataflow.engine.metrics`` reads it when scraped)."""
        with self._metrics_lock:
            out: dict[str, StepSnapshot] = {}
            for step, snap in self._retired.items():
                out[step] = StepSnapshot.empty()
                out[step].add(snap)
            for task in list(self.tasks.values()):
                snapshots = getattr(task.pipeline, "step_snapshots", None)
                if snapshots is None:
                    continue
                for step, snap in snapshots().items():
                    out.setdefault(step, StepSnapshot.empty()).add(snap)
            return out

    def punctuate(self, now_ms: int) -> list[Record]:
        out: list[Record] = []
        for task in self.tasks.values():
            out.extend(task.punctuate(now_ms))
        return out

    def changelog_entries(self) -> list[ChangelogEntry]:
        out: list[ChangelogEntry] = []
        for task in self.tasks.values():
            out.extend(task.changelog_entries())
        return out

    def commit(self) -> None:
        for task in self.tasks.values():
            task.commit()

    def rollback(self) -> None:
        for task in self.tasks.values():
            task.rollback()

    def close(self) -> None:
        self.revoke(list(self.tasks))
