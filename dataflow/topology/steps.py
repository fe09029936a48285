"""Runtime processor of one compiled step: filter -> transform -> [join] -> [batch] -> [trigger
gate] -> header rewrite -> [cycle counter] -> sink. Pure and synchronous over
(Record, now_ms) and ``StateStore``s.
"""
from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import cast

from dataflow import oip
from dataflow.batching import Batcher
from dataflow.headers import (
    PIPELINE_ERRORS,
    Headers,
    rewrite_client_pairs,
    rewrite_for_sink,
    rewrite_with,
    sink_trailer,
)
from dataflow.joins import JoinResult, StreamJoin, TriggerGate
from dataflow.records import Record
from dataflow.state.base import StoreFactory
from dataflow.topology.cycles import VisitCounter
from dataflow.topology.model import JoinType, StepNode, Topology
from dataflow.topology.stats import LATENCY_BUCKETS, PipelineStats, StepLatency
from dataflow.topology.transforms import (
    JoinMerge,
    apply_chain,
    is_empty,
    serialize,
    trigger_fires,
    wire_converter,
)

log = logging.getLogger(__name__)

# One output of a direct route: (topic, value, headers, timestamp); key and partition are the input's.
DirectOutput = tuple[str, bytes, Headers, int]
# (key, value, headers as a Kafka client gives them, timestamp, partition, now_ms) -> the record's
# outputs, or None when the record needs the general path (``Pipeline.process``).
DirectSource = Callable[[bytes | None, bytes | None, list[tuple[str, bytes | None]], int, int, int],
                        "list[DirectOutput] | None"]


def _make_batcher(step: StepNode, store_factory: StoreFactory) -> Batcher:
    b = step.batch
    return Batcher(store_factory(f"batch:{step.name}"), size=b.size or None, window_ms=b.window_ms or None,
                   rolling=b.rolling, name=step.name)


class StepProcessor:
    def __init__(self, topology: Topology, step: StepNode, store_factory: StoreFactory,
                 stats: PipelineStats, counter: VisitCounter | None):
        self.topology = topology
        self.step = step
        self.stats = stats
        self.latency = StepLatency()    # time in on_source / on_trigger (Pipeline.process measures)
        self.counter = counter
        self.join: StreamJoin | None = None
        if step.is_join:
            self.join = StreamJoin(store_factory(f"join:{step.name}"), branches=len(step.sources),
                                   kind=step.join, window_ms=step.window_ms, name=f"{topology.pipeline}/{step.name}")
        self.gate: TriggerGate | None = None
        if step.triggers:
            combine_store = store_factory(f"triggers:{step.name}") if len(step.triggers) > 1 else None
            self.gate = TriggerGate(store_factory(f"gate:{step.name}"), combine_store,
                                    triggers=len(step.triggers), triggers_join=step.triggers_join,
                                    window_ms=step.window_ms, name=f"{topology.pipeline}/{step.name}")
        self._merge = JoinMerge(step.produces_requests)
        # A join result's value: the merge, called directly unless the join is an ``any``
        # (``_join_value``; one call less per output).
        self._result_value: Callable[[list[bytes | None]], bytes] = \
            self._merge if step.join is not JoinType.ANY else self._join_value
        self.batcher = _make_batcher(step, store_factory) if step.batch.enabled and not step.is_join else None
        self._from_error_topic = all(s.topic == topology.error_topic for s in step.sources)
        self._wire = [wire_converter(s) for s in step.sources]
        self._trailer = sink_trailer(topology.pipeline, topology.version)
        self._sink = step.sink
        # Nothing between the conversion and the sink: a converted record goes straight out.
        self._direct = self.join is None and self.batcher is None and self.gate is None and counter is None
        # Nothing between the join and the sink: a join result goes straight out.
        self._join_direct = self.join is not None and self.gate is None and counter is None

    # -- inputs -----------------------------------------------------------------------------
    def on_source(self, index: int, record: Record, now_ms: int) -> list[Record]:
        wire = self._wire[index]
        converted = wire(record.value) if wire is not None else None
        if converted is not None:
            value, count = converted
            if not count and not self.step.pass_empty:
                self.stats.empty_dropped += 1
                return []
        else:
            source = self.step.sources[index]
            try:
                result = apply_chain(source, record.value)
            except oip.CodecError as exc:
                return self._malformed(record, source.topic, exc)
            if is_empty(result) and not self.step.pass_empty:
                self.stats.empty_dropped += 1
                return []
            value = serialize(result)
        if self._direct:   # what _to_sink makes of it, in one step
            self.stats.produced += 1
            return [Record(self._sink, record.key, value, rewrite_with(record.headers, self._trailer),
                           record.timestamp, record.partition)]
        if self.join is not None:
            try:
                results = self.join.add_value(index, record.key, value, record.headers, record.timestamp,
                                              record.partition, now_ms)
                if not results:
                    return []
                if self._join_direct:
                    return self._joined_to_sink(results)
                joined = self._joined(results)
            except oip.CodecError as exc:   # cannot happen for values we serialised; be safe
                return self._malformed(record, self.step.sources[index].topic, exc)
            return self._after_join(joined, now_ms)
        source = self.step.sources[index]
        data = Record(record.topic, record.key, value, record.headers, record.timestamp, record.partition)
        if self.batcher is not None:
            try:
                batched = self.batcher.add(data, now_ms)
            except oip.CodecError as exc:   # e.g. a tensor whose shape cannot join the pending batch
                return self._malformed(record, source.topic, exc)
            return self._after_join(batched, now_ms)
        return self._after_join([data], now_ms)

    def direct_source(self, index: int, wanted: tuple[str, bytes], timed: bool) -> DirectSource | None:
        """What ``Pipeline.process`` and ``on_source`` do with a record of source ``index`` when
        this step alone consumes the topic and what it makes goes straight to its sink (a chain
        step, or a join with no trigger gate or cycle counter after it), as one call on the
        record's fields: no ``Record`` in, no routing, outputs as (topic, value, headers,
        timestamp) with the input's key and partition.

        The usual record (it carries the ``wanted`` pipeline header, the wire converter knows its
        layout, it has tensors, every header has a value) is handled, counted and timed as
        ``process`` would. Anything else is left to the general path before anything is counted
        or buffered, so both paths give the same outputs, state and statistics."""
        wire = self._wire[index]
        if wire is None or not (self._direct or self._join_direct):
            return None
        stats, latency, trailer, sink = self.stats, self.latency, self._trailer, self._sink
        join, join_value = self.join, self._result_value
        source_topic = self.step.sources[index].topic

        def route(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]], ts: int,
                  partition: int, now_ms: int) -> list[DirectOutput] | None:
            if wanted not in headers:
                return None
            started = perf_counter() if timed else 0.0
            converted = wire(value)
            if converted is None or not converted[1]:   # unknown layout, or no tensors left
                return None
            outs: list[DirectOutput]
            if join is None:   # as on_source's straight-to-sink path
                out = rewrite_client_pairs(headers, trailer)
                if out is None:
                    return None
                stats.consumed += 1
                stats.produced += 1
                outs = [(sink, converted[0], out, ts)]
            else:
                for h in headers:   # stored with the arrival: normalised ones only
                    if h[1] is None:
                        return None
                stats.consumed += 1
                text_key = key.decode() if key is not None else None
                checked = cast(Headers, headers)
                try:   # as on_source then _joined_to_sink
                    results = join.add_value(index, text_key, converted[0], checked, ts, partition, now_ms)
                    outs = [(sink, join_value(r.values), rewrite_with(r.headers, trailer), r.timestamp)
                            for r in results]
                    stats.produced += len(outs)
                except oip.CodecError as exc:   # cannot happen for values we serialised; be safe
                    record = Record(source_topic, text_key, value, checked, ts, partition)
                    outs = [(r.topic, cast(bytes, r.value), r.headers, r.timestamp)
                            for r in self._malformed(record, source_topic, exc)]
            if timed:   # StepLatency.observe, written out
                took = perf_counter() - started
                latency.counts[bisect_left(LATENCY_BUCKETS, took)] += 1
                latency.total += took
            return outs

        return route

    def on_trigger(self, index: int, record: Record, now_ms: int) -> list[Record]:
        trigger = self.step.triggers[index]
        try:
            fires = trigger_fires(trigger, record.value)
        except oip.CodecError as exc:
            return self._malformed(record, trigger.topic, exc)
        if not fires:
            self.stats.trigger_ignored += 1
            return []
        assert self.gate is not None  # a step with triggers has a gate
        return self._to_sink(self.gate.add_trigger(index, record, now_ms), now_ms)

    def punctuate(self, now_ms: int) -> list[Record]:
        out: list[Record] = []
        if self.join is not None:
            out.extend(self._after_join(self._joined(self.join.punctuate(now_ms)), now_ms))
        if self.batcher is not None:
            out.extend(self._after_join(self.batcher.punctuate(now_ms), now_ms))
        if self.gate is not None:
            out.extend(self._to_sink(self.gate.punctuate(now_ms), now_ms))
        return out

    # -- stages -----------------------------------------------------------------------------
    def _joined(self, results: list[JoinResult]) -> list[Record]:
        out: list[Record] = []
        for r in results:
            out.append(Record(topic="", key=r.key, value=self._result_value(r.values), headers=r.headers,
                              timestamp=r.timestamp, partition=r.partition))
        return out

    def _join_value(self, values: list[bytes | None]) -> bytes:
        """A join result's value: for ``any`` the one value that came, else the branches merged."""
        if self.step.join is JoinType.ANY:
            return next(v for v in values if v is not None)
        return self._merge(values)

    def _joined_to_sink(self, results: list[JoinResult]) -> list[Record]:
        """What ``_joined`` then ``_to_sink`` make of join results, in one step (no gate, no
        cycle counter)."""
        sink, trailer, value = self._sink, self._trailer, self._result_value
        out = [Record(sink, r.key, value(r.values), rewrite_with(r.headers, trailer), r.timestamp, r.partition)
               for r in results]
        self.stats.produced += len(out)
        return out

    def _after_join(self, records: list[Record], now_ms: int) -> list[Record]:
        if self.gate is None:
            return self._to_sink(records, now_ms)
        released: list[Record] = []
        for r in records:
            released.extend(self.gate.add_data(r, now_ms))
        return self._to_sink(released, now_ms)

    def _to_sink(self, records: list[Record], now_ms: int) -> list[Record]:
        out = []
        for r in records:
            r = r.evolve(topic=self.step.sink, headers=rewrite_with(r.headers, self._trailer))
            if self.counter is not None:
                before = self.counter.exceeded
                r = self.counter.route(r, sink=self.step.sink, sink_pipeline=self.step.sink_pipeline,
                                       from_error_topic=self._from_error_topic, now_ms=now_ms)
                self.stats.revisits_exceeded += self.counter.exceeded - before
            out.append(r)
        self.stats.produced += len(out)
        return out

    def _malformed(self, record: Record, topic: str, exc: Exception) -> list[Record]:
        """A record the step cannot decode becomes an error record for its key on the error topic
        (the reference's ``seldon-pipeline-errors`` header, value ``ERROR: ...`` text, as for
        exceeded step revisits), so the pipeline's error step forwards it to the pipeline output
        and a waiting caller gets the error at once instead of a timeout."""
        self.stats.malformed += 1
        t = self.topology
        log.warning("pipeline %s step %s: undecodable record from topic %s partition %s key %s: %s",
                    t.pipeline, self.step.name, topic, record.partition, record.key, exc)
        if not t.error_topic:
            return []
        text = f"ERROR: step {self.step.name} cannot decode the record from topic {topic}: {exc}"
        headers = rewrite_for_sink(record.headers, t.pipeline, t.version) + [(PIPELINE_ERRORS, t.pipeline.encode())]
        return [record.evolve(topic=t.error_topic, value=text.encode("utf-8"), headers=headers)]

    def flush(self) -> None:
        """Write state the join processors keep decoded in memory to their stores."""
        for p in (self.join, self.gate):
            if p is not None:
                p.flush()

    def buffered(self) -> tuple[int, int, int]:
        """(records waiting in join / trigger windows, of them expired so far, rows in pending
        batches): cheap reads of in-memory counters, safe from the metrics thread."""
        joins = [j for j in (self.join, self.gate) if j is not None]
        rows = self.batcher.pending_rows() if self.batcher is not None else 0
        return sum(j.buffered for j in joins), sum(j.expired for j in joins), rows

    def next_deadline(self) -> int | None:
        parts = [p.next_deadline() for p in (self.join, self.batcher, self.gate) if p is not None]
        deadlines = [d for d in parts if d is not None]
        return min(deadlines) if deadlines else None
