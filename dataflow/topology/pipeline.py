"""``Pipeline``: a compiled pipeline version with its processors and stores; implements the
``CompiledPipeline`` seam (``dataflow.topology.compiled``) that runtimes and the test driver run."""
from __future__ import annotations

from collections import defaultdict

from dataflow.headers import PIPELINE, has_value, normalise
from dataflow.records import Record
from dataflow.state.base import StateStore, StoreFactory
from dataflow.topology.cycles import STORE_NAME as COUNTER_STORE, VisitCounter
from dataflow.topology.model import Topology
from dataflow.topology.stats import PipelineStats
from dataflow.topology.steps import StepProcessor

SOURCE, TRIGGER = "source", "trigger"


class Pipeline:
    """Routes each consumed record to every step (source or trigger) subscribed to its topic whose
    pipelineName matches the record's ``pipeline`` header, and returns what the steps emit."""

    def __init__(self, topology: Topology, store_factory: StoreFactory):
        self.topology = topology
        self.pipeline = topology.pipeline
        self.version = topology.version
        self.uid = topology.uid
        self.stats = PipelineStats()
        self._stores: list[StateStore] = []

        def tracked_factory(name: str) -> StateStore:
            store = store_factory(name)
            self._stores.append(store)
            return store

        self.counter: VisitCounter | None = None
        if topology.allow_cycles:
            self.counter = VisitCounter(tracked_factory(COUNTER_STORE), output_topic=topology.output_topic,
                                        error_topic=topology.error_topic, max_revisits=topology.max_step_revisits,
                                        ttl_ms=topology.cycle_counter_ttl_ms)
        self.steps = [StepProcessor(topology, step, tracked_factory, self.stats, self.counter) for step in topology.steps]
        self._routes: dict[str, list[tuple[StepProcessor, str, int, bytes]]] = defaultdict(list)
        for proc in self.steps:
            for i, s in enumerate(proc.step.sources):
                self._routes[s.topic].append((proc, SOURCE, i, s.pipeline.encode()))
            for i, t in enumerate(proc.step.triggers):
                self._routes[t.topic].append((proc, TRIGGER, i, t.pipeline.encode()))

    @property
    def source_topics(self) -> frozenset[str]:
        return self.topology.source_topics

    @property
    def all_topics(self) -> frozenset[str]:
        return self.topology.all_topics

    def process(self, record: Record, now_ms: int) -> list[Record]:
        out: list[Record] = []
        routes = self._routes.get(record.topic)
        if not routes:
            return out
        if any(not isinstance(v, bytes) or not isinstance(k, str) for k, v in record.headers):
            record = record.evolve(headers=normalise(record.headers))   # client-library header shapes
        for proc, role, index, pipeline_name in routes:
            self.stats.consumed += 1
            if not has_value(record.headers, PIPELINE, pipeline_name):
                self.stats.filtered += 1
                continue
            if role == SOURCE:
                out.extend(proc.on_source(index, record, now_ms))
            else:
                out.extend(proc.on_trigger(index, record, now_ms))
        return out

    def punctuate(self, now_ms: int) -> list[Record]:
        out: list[Record] = []
        for proc in self.steps:
            out.extend(proc.punctuate(now_ms))
        if self.counter is not None:
            self.counter.punctuate(now_ms)
        return out

    def next_deadline(self) -> int | None:
        """Earliest wall-clock time at which ``punctuate`` has work (None: nothing pending)."""
        deadlines = [d for d in (p.next_deadline() for p in self.steps) if d is not None]
        return min(deadlines) if deadlines else None

    def describe(self) -> str:
        return self.topology.describe()

    def mermaid(self) -> str:
        return self.topology.mermaid()

    def flush(self) -> None:
        for s in self._stores:
            s.flush()

    def close(self) -> None:
        for s in self._stores:
            s.close()
