"""``Pipeline``: a compiled pipeline version with its processors and stores; implements the
``CompiledPipeline`` seam (``dataflow.topology.compiled``) that runtimes and the test driver run."""
from __future__ import annotations

import logging
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from time import perf_counter

from dataflow.headers import PIPELINE, in_shape, normalise
from dataflow.records import Record
from dataflow.state.base import StoreFactory
from dataflow.topology.cycles import STORE_NAME as COUNTER_STORE
from dataflow.topology.cycles import VisitCounter
from dataflow.topology.model import JoinType, Topology
from dataflow.topology.stats import LATENCY_BUCKETS, PipelineStats, StepSnapshot
from dataflow.topology.steps import DirectSource, StepProcessor

log = logging.getLogger(__name__)

# A step's handler of one consumed topic: ``(index of the source or trigger, record, now_ms)``.
Handler = Callable[[int, Record, int], list[Record]]


class Pipeline:
    """Routes each consumed record to every step (source or trigger) subscribed to its topic whose
    pipelineName matches the record's ``pipeline`` header, and returns what the steps emit."""

    def __init__(self, topology: Topology, store_factory: StoreFactory):
        self.topology = topology
        self.pipeline = topology.pipeline
        self.version = topology.version
        self.uid = topology.uid
        self.own_stats = PipelineStats()   # what belongs to no step (cycle-counter punctuation)
        # step name -> the last punctuation error (cleared when the step punctuates cleanly again)
        self.punctuate_failures: dict[str, str] = {}

        self.counter: VisitCounter | None = None
        if topology.allow_cycles:
            self.counter = VisitCounter(store_factory(COUNTER_STORE), output_topic=topology.output_topic,
                                        error_topic=topology.error_topic, max_revisits=topology.max_step_revisits,
                                        ttl_ms=topology.cycle_counter_ttl_ms)
        self.steps = [StepProcessor(topology, step, store_factory, PipelineStats(), self.counter)
                      for step in topology.steps]
        # topic -> (processor, its handler for the topic's role - source or trigger -, index, the
        # ``pipeline`` header the record must carry)
        self._routes: dict[str, list[tuple[StepProcessor, Handler, int, tuple[str, bytes]]]] = defaultdict(list)
        for proc in self.steps:
            for i, s in enumerate(proc.step.sources):
                self._routes[s.topic].append((proc, proc.on_source, i, (PIPELINE, s.pipeline.encode())))
            for i, t in enumerate(proc.step.triggers):
                self._routes[t.topic].append((proc, proc.on_trigger, i, (PIPELINE, t.pipeline.encode())))
        # topic -> the one step consuming it, as a call on the record's fields (see
        # ``StepProcessor.direct_source``): what a runtime may use instead of ``process``.
        self.direct_routes: dict[str, DirectSource] = {}
        for topic, routes in self._routes.items():
            if len(routes) == 1:
                proc, handle, index, wanted = routes[0]
                direct = proc.direct_source(index, wanted, topology.step_latency) \
                    if handle == proc.on_source else None
                if direct is not None:
                    self.direct_routes[topic] = direct

    @property
    def stats(self) -> PipelineStats:
        """Every step's counters summed (a snapshot)."""
        total = PipelineStats()
        total.add(self.own_stats)
        for proc in self.steps:
            total.add(proc.stats)
        return total

    def step_snapshots(self) -> dict[str, StepSnapshot]:
        """Each step's counters, latency and buffered state, copied now (read by metrics from
        another thread: only plain reads of in-memory fields)."""
        out = {}
        for proc in self.steps:
            snap = StepSnapshot.empty()
            snap.stats.add(proc.stats)
            snap.latency.add(proc.latency)
            snap.join_buffered, snap.join_expired, snap.batch_rows = proc.buffered()
            out[proc.step.name] = snap
        return out

    @property
    def aligned_topics(self) -> tuple[frozenset[str], ...]:
        """The topics of each step that joins records of two topics or more (branches of a join,
        data and triggers of a gate): their records meet by record time, so a runtime hands
        them over in record-time order (``dataflow.runtime.alignment``)."""
        groups = []
        for proc in self.steps:
            step = proc.step
            buffers = proc.gate is not None or (proc.join is not None and proc.join.kind is not JoinType.ANY)
            if not buffers:   # an ``any`` join buffers nothing: arrival order cannot lose a result
                continue
            topics = frozenset(s.topic for s in step.sources) | frozenset(t.topic for t in step.triggers)
            if len(topics) > 1:
                groups.append(topics)
        return tuple(groups)

    @property
    def source_topics(self) -> frozenset[str]:
        return self.topology.source_topics

    @property
    def all_topics(self) -> frozenset[str]:
        return self.topology.all_topics

    def record_filters(self) -> dict[str, frozenset[bytes]]:
        """Per consumed topic, the ``pipeline`` header values of the records some step takes
        (``process`` drops every other record of that topic unread)."""
        return {topic: frozenset(route[3][1] for route in routes) for topic, routes in self._routes.items()}

    def process(self, record: Record, now_ms: int) -> list[Record]:
        out: list[Record] = []
        routes = self._routes.get(record.topic)
        if not routes:
            return out
        if not in_shape(record.headers):
            record = record.evolve(headers=normalise(record.headers))   # client-library header shapes
        headers = record.headers
        timed = self.topology.step_latency
        for proc, handle, index, wanted in routes:
            stats = proc.stats
            stats.consumed += 1
            if wanted not in headers:   # the pipeline filter: some ``pipeline`` header has this value
                stats.filtered += 1
                continue
            if not timed:
                out += handle(index, record, now_ms)
                continue
            started = perf_counter()
            out += handle(index, record, now_ms)
            took = perf_counter() - started
            latency = proc.latency   # StepLatency.observe, written out (once per record and step)
            latency.counts[bisect_left(LATENCY_BUCKETS, took)] += 1
            latency.total += took
        return out

    def punctuate(self, now_ms: int) -> list[Record]:
        """Every step's time-driven output. A step that raises is logged (once per distinct
        error), counted and listed in ``punctuate_failures``; the other steps still punctuate."""
        out: list[Record] = []
        for proc in self.steps:
            try:
                out.extend(proc.punctuate(now_ms))
            except Exception as exc:
                proc.stats.punctuate_errors += 1
                self._punctuate_failed(proc.step.name, exc)
            else:
                self.punctuate_failures.pop(proc.step.name, None)
        if self.counter is not None:
            try:
                self.counter.punctuate(now_ms)
            except Exception as exc:
                self.own_stats.punctuate_errors += 1
                self._punctuate_failed("cycle counter", exc)
        return out

    def _punctuate_failed(self, step: str, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if self.punctuate_failures.get(step) != text:
            log.error("pipeline %s step %s: punctuate failed: %s", self.pipeline, step, text,
                      exc_info=exc)
        self.punctuate_failures[step] = text

    def next_deadline(self) -> int | None:
        """Earliest wall-clock time at which ``punctuate`` has work (None: nothing pending)."""
        deadlines = [d for d in (p.next_deadline() for p in self.steps) if d is not None]
        return min(deadlines) if deadlines else None

    def describe(self) -> str:
        return self.topology.describe()

    def mermaid(self) -> str:
        return self.topology.mermaid()

    def flush(self) -> None:
        """Write what processors keep in memory to their stores: runtimes call it before a
        checkpoint reads the stores' changes."""
        for proc in self.steps:
            proc.flush()
