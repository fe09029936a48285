"""Tiny ``CompiledPipeline`` fakes for runtime tests and benchmarks (no step semantics).

They are importable by dotted path so a worker process can build them:
``FaustRunner(msg, config, pipeline_factory="dataflow_testing.faust_factories:passthrough")``.
Both read their topics from the ``PipelineUpdateMessage``: every update's sources are consumed
and copied to that update's sink.
"""
from __future__ import annotations

from dataflow import headers as hdrs
from dataflow.records import Record


class Passthrough:
    """Copies each record from an update's source topics to its sink (key, headers, timestamp kept;
    the sink header rewrite of ``headers.rewrite_for_sink`` applied)."""

    def __init__(self, msg):
        self.pipeline = msg.pipeline
        self.version = msg.version
        self.uid = msg.uid
        self.routes: dict[str, list[str]] = {}
        for update in msg.updates:
            for src in update.sources:
                self.routes.setdefault(src.topicName, []).append(update.sink.topicName)

    @property
    def source_topics(self) -> frozenset[str]:
        return frozenset(self.routes)

    @property
    def all_topics(self) -> frozenset[str]:
        return frozenset(self.routes) | {s for sinks in self.routes.values() for s in sinks}

    def process(self, record: Record, now_ms: int) -> list[Record]:
        if record.value == b"poison":
            raise ValueError("poison record")
        headers = hdrs.rewrite_for_sink(record.headers, self.pipeline, self.version)
        return [record.evolve(topic=sink, headers=headers) for sink in self.routes[record.topic]]

    def punctuate(self, now_ms: int) -> list[Record]:
        return []


class CountingPipeline(Passthrough):
    """Keeps a per-key count in a store; the output value is ``b"<count>"``.

    ``punctuate`` emits nothing but deletes keys whose value was ``b"forget"`` (exercises writes
    outside an event).
    """

    def __init__(self, msg, store):
        super().__init__(msg)
        self.store = store

    def process(self, record: Record, now_ms: int) -> list[Record]:
        state_key = f"count/{record.key}".encode()
        if record.value == b"forget":
            self.store.put(b"forget/" + (record.key or "").encode(), b"1")
        count = int(self.store.get(state_key) or b"0") + 1
        self.store.put(state_key, str(count).encode())
        headers = hdrs.rewrite_for_sink(record.headers, self.pipeline, self.version)
        return [record.evolve(topic=sink, value=str(count).encode(), headers=headers)
                for sink in self.routes[record.topic]]

    def punctuate(self, now_ms: int) -> list[Record]:
        for key, _ in list(self.store.items(b"forget/")):
            self.store.delete(key)
            self.store.delete(b"count/" + key[len(b"forget/"):])
        return []


def passthrough(msg, config, store_factory):
    return Passthrough(msg)


def counting(msg, config, store_factory):
    return CountingPipeline(msg, store_factory("counts:per-key"))
