"""Counters a compiled pipeline keeps about what it consumed, dropped and produced.

Each step keeps its own ``PipelineStats`` and ``StepLatency`` (plain attributes bumped on the
record path: no locks, no label lookups); ``Pipeline.stats`` sums them. The engine's Prometheus
collector (``dataflow.engine.metrics``) reads these same objects when scraped, so nothing is
counted twice.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import asdict, dataclass, fields


@dataclass
class PipelineStats:
    consumed: int = 0          # records offered to a step (after topic routing)
    filtered: int = 0          # skipped: `pipeline` header did not match the source's pipelineName
    malformed: int = 0         # value could not be decoded (logged; an error record sent for its key)
    empty_dropped: int = 0     # dropped: no tensor left after selection
    trigger_ignored: int = 0   # trigger records without the trigger tensors
    produced: int = 0          # records emitted to sinks or the error topic
    revisits_exceeded: int = 0 # records turned into max-step-revisits errors
    punctuate_errors: int = 0  # punctuations of a step that raised (logged; other steps went on)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: PipelineStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# Upper bounds (seconds) of the step latency buckets: a step's own work on one record (decode,
# select, join/batch bookkeeping, encode), from a few microseconds to a slow decode of a large
# tensor. Model time is not in here: the model gateway measures it.
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                   0.025, 0.05, 0.1, 0.25, 1.0)


class StepLatency:
    """A histogram as two plain fields: counts per bucket (the last is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def add(self, other: StepLatency) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.total += other.total


@dataclass
class StepSnapshot:
    """One step's numbers at one moment, summed over the partition tasks that ran it: counters
    and latency only grow; ``join_buffered`` and ``batch_rows`` are gauges (now)."""

    stats: PipelineStats
    latency: StepLatency
    join_expired: int = 0
    join_buffered: int = 0
    batch_rows: int = 0

    @classmethod
    def empty(cls) -> StepSnapshot:
        return cls(PipelineStats(), StepLatency())

    def add(self, other: StepSnapshot, *, gauges: bool = True) -> None:
        self.stats.add(other.stats)
        self.latency.add(other.latency)
        self.join_expired += other.join_expired
        if gauges:
            self.join_buffered += other.join_buffered
            self.batch_rows += other.batch_rows
