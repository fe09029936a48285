"""Cycle guard (spec 3.8): the visiting counter every step output passes when ``allowCycles``.

Counter key ``"<recordKey>:<sinkTopic>"`` (previous visits). A record whose count exceeds
``maxStepRevisits`` becomes the reference's error text plus ``seldon-pipeline-errors`` and is
routed to the pipeline's error topic (as is any value starting with ``ERROR:``); the error step
then forwards it to the pipeline output. A record reaching the pipeline output topic clears every
counter whose key starts with the record key.
"""
from __future__ import annotations

from dataflow.headers import PIPELINE_ERRORS
from dataflow.records import Record
from dataflow.state.base import StateStore

ERROR_PREFIX = b"ERROR:"
STORE_NAME = "visiting-counter-store"


def revisit_error_text(max_revisits: int, key: str | None, sink: str, sink_pipeline: str) -> str:
    # The reference formats its Kotlin data class TopicForPipeline into the message.
    return (f"ERROR: Max step revisits ({max_revisits}) exceeded for request {key} in topic "
            f"TopicForPipeline(topicName={sink}, pipelineName={sink_pipeline})")


class VisitCounter:
    def __init__(self, store: StateStore, *, output_topic: str, error_topic: str, max_revisits: int):
        self.store = store
        self.output_topic = output_topic
        self.error_topic = error_topic
        self.max_revisits = max_revisits
        self.exceeded = 0

    def route(self, record: Record, *, sink: str, sink_pipeline: str, from_error_topic: bool) -> Record:
        """``record`` already has its sink headers; returns it addressed to sink or error topic."""
        key = record.key or ""
        if sink == self.output_topic:
            for k, _ in list(self.store.items(key.encode("utf-8"))):
                self.store.delete(k)
            return record.evolve(topic=sink)
        counter_key = f"{key}:{sink}".encode("utf-8")
        raw = self.store.get(counter_key)
        visits = int(raw) if raw else 0
        if visits > self.max_revisits:
            self.exceeded += 1
            record = record.evolve(
                value=revisit_error_text(self.max_revisits, record.key, sink, sink_pipeline).encode("utf-8"),
                headers=list(record.headers) + [(PIPELINE_ERRORS, sink_pipeline.encode("utf-8"))],
            )
        self.store.put(counter_key, str(visits + 1).encode())
        if not from_error_topic and record.value is not None and record.value.startswith(ERROR_PREFIX):
            return record.evolve(topic=self.error_topic)
        return record.evolve(topic=sink)
