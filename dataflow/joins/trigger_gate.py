"""Trigger gating: a step fires only when its data and its (combined) triggers are both
present for the same key within the window.

Trigger streams are combined with the step's ``triggersJoinTy`` (any / outer / inner, as in
``StreamJoin``); the combined trigger is then inner-joined with the data stream, keeping the data
value. Only the presence of a trigger matters, so trigger values are not buffered.
"""
from __future__ import annotations

from dataflow.joins.stream_join import JoinResult, StreamJoin
from dataflow.joins.types import JoinType
from dataflow.records import Record
from dataflow.state.base import StateStore

DATA, TRIGGER = 0, 1


class TriggerGate:
    def __init__(self, gate_store: StateStore, trigger_store: StateStore | None, *, triggers: int,
                 triggers_join: JoinType, window_ms: int, name: str = "triggers"):
        if triggers < 1:
            raise ValueError(f"trigger gate {name} needs at least one trigger stream")
        self.name = name
        self.gate = StreamJoin(gate_store, branches=2, kind=JoinType.INNER, window_ms=window_ms, name=f"{name}:gate")
        self.combine = None
        if triggers > 1:
            if trigger_store is None:
                raise ValueError(f"trigger gate {name}: {triggers} trigger streams need a trigger store")
            self.combine = StreamJoin(trigger_store, branches=triggers, kind=triggers_join,
                                      window_ms=window_ms, name=f"{name}:combine")

    def add_data(self, record: Record, now_ms: int) -> list[Record]:
        return self._released(self.gate.add(DATA, record, now_ms))

    def add_trigger(self, index: int, record: Record, now_ms: int) -> list[Record]:
        """``record`` is one trigger stream's (already filtered, non-empty) trigger."""
        marker = record.evolve(value=b"")
        if self.combine is None:
            return self._released(self.gate.add(TRIGGER, marker, now_ms))
        out: list[Record] = []
        for combined in self.combine.add(index, marker, now_ms):
            out.extend(self._fire(combined, now_ms))
        return out

    def _fire(self, combined: JoinResult, now_ms: int) -> list[Record]:
        trigger = Record(topic="", key=combined.key, value=b"", headers=combined.headers,
                         timestamp=combined.timestamp, partition=combined.partition)
        return self._released(self.gate.add(TRIGGER, trigger, now_ms))

    @staticmethod
    def _released(results: list[JoinResult]) -> list[Record]:
        return [Record(topic="", key=r.key, value=r.values[DATA], headers=r.headers,
                       timestamp=r.timestamp, partition=r.partition) for r in results]

    def punctuate(self, now_ms: int) -> list[Record]:
        """Outer-combined trigger partials fire first, so data buffered until this tick is released."""
        out: list[Record] = []
        if self.combine is not None:
            for combined in self.combine.punctuate(now_ms):   # outer trigger partials
                out.extend(self._fire(combined, now_ms))
        self.gate.punctuate(now_ms)
        return out

    @property
    def buffered(self) -> int:
        """Data and trigger records waiting for each other (see ``StreamJoin.buffered``)."""
        return self.gate.buffered + (self.combine.buffered if self.combine is not None else 0)

    @property
    def expired(self) -> int:
        return self.gate.expired + (self.combine.expired if self.combine is not None else 0)

    def flush(self) -> None:
        self.gate.flush()
        if self.combine is not None:
            self.combine.flush()

    def next_deadline(self) -> int | None:
        deadlines = [d for d in (self.gate.next_deadline(),
                                 self.combine.next_deadline() if self.combine else None) if d is not None]
        return min(deadlines) if deadlines else None
