"""A tiny CompiledPipeline for runtime/engine tests that must not depend on the real topology.

Steps are read from the PipelineUpdateMessage: a step with one source copies records to its sink;
a step with several sources is a key join over a state store (emits the concatenated values,
in source order, once every source has a value for the key). Headers are rewritten as at every
dataflow sink. Enough to exercise consume/produce/partitioning/state/commit, nothing more.
"""
from __future__ import annotations

from dataflow import headers as hdrs
from dataflow.records import Record


class FakePipeline:
    def __init__(self, msg, store_factory):
        self.pipeline = msg.pipeline
        self.version = msg.version
        self.uid = msg.uid
        self.steps = []
        for i, u in enumerate(msg.updates):
            sources = [s.topicName for s in u.sources]
            store = store_factory(f"join:{i}") if len(sources) > 1 else None
            self.steps.append((sources, u.sink.topicName, store))
        if any(s.pipelineName == "fail-compile" for u in msg.updates for s in u.sources):
            raise ValueError("fake compile failure requested")

    @property
    def source_topics(self) -> frozenset[str]:
        return frozenset(t for sources, _, _ in self.steps for t in sources)

    @property
    def all_topics(self) -> frozenset[str]:
        return self.source_topics | frozenset(sink for _, sink, _ in self.steps)

    def process(self, record: Record, now_ms: int) -> list[Record]:
        if record.value == b"boom":
            raise ValueError("fake processing failure")
        out = []
        for sources, sink, store in self.steps:
            if record.topic not in sources:
                continue
            headers = hdrs.rewrite_for_sink(record.headers, self.pipeline, self.version)
            if store is None:
                out.append(record.evolve(topic=sink, headers=headers))
                continue
            key = record.key.encode()
            store.put(key + b"|" + record.topic.encode(), record.value)
            parts = [store.get(key + b"|" + t.encode()) for t in sources]
            if all(p is not None for p in parts):
                for t in sources:
                    store.delete(key + b"|" + t.encode())
                out.append(record.evolve(topic=sink, headers=headers, value=b"+".join(parts)))
        return out

    def punctuate(self, now_ms: int) -> list[Record]:
        return []


def make_fake_pipeline(msg, config, store_factory) -> FakePipeline:
    """``PipelineFactory`` signature used by KafkaRunner / the engine's hidden --pipeline-factory."""
    return FakePipeline(msg, store_factory)
