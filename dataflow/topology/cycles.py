"""Cycle guard (``maxStepRevisits``): the visiting counter every step output passes when ``allowCycles``.

Counter key ``"<recordKey>:<sinkTopic>"`` (previous visits). A record whose count exceeds
``maxStepRevisits`` becomes the reference's error text plus ``seldon-pipeline-errors`` and is
routed to the pipeline's error topic (as is any value starting with ``ERROR:``); the error step
then forwards it to the pipeline output. A record reaching the pipeline output topic clears every
counter whose key starts with the record key.

Counters of requests that never reach the output (dropped, off-path, asynchronous) would pile up
forever in the reference; here a counter untouched for ``ttl_ms`` is removed by ``punctuate``.
Stored value: ``b"<visits>:<last wall ms>"``.
"""
from __future__ import annotations

import heapq

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
    def __init__(self, store: StateStore, *, output_topic: str, error_topic: str, max_revisits: int,
                 ttl_ms: int = 3_600_000):
        self.store = store
        self.output_topic = output_topic
        self.error_topic = error_topic
        self.max_revisits = max_revisits
        self.ttl_ms = ttl_ms
        self.exceeded = 0
        self._expiry: list[tuple[int, bytes]] = []
        for k, v in store.items():
            heapq.heappush(self._expiry, (self._decode(v)[1] + ttl_ms, k))

    @staticmethod
    def _decode(raw: bytes | None) -> tuple[int, int]:
        if not raw:
            return 0, 0
        visits, _, wall = raw.partition(b":")
        return int(visits), int(wall or 0)

    def punctuate(self, now_ms: int) -> None:
        """Drop counters untouched for ``ttl_ms``."""
        while self._expiry and self._expiry[0][0] <= now_ms:
            _, key = heapq.heappop(self._expiry)
            raw = self.store.get(key)
            if raw is not None and self._decode(raw)[1] + self.ttl_ms <= now_ms:
                self.store.delete(key)

    def __len__(self) -> int:
        return sum(1 for _ in self.store.items())

    def route(self, record: Record, *, sink: str, sink_pipeline: str, from_error_topic: bool,
              now_ms: int = 0) -> Record:
        """``record`` already has its sink headers; returns it addressed to sink or error topic."""
        key = record.key or ""
        if sink == self.output_topic:
            for k, _ in list(self.store.items(key.encode("utf-8"))):
                self.store.delete(k)
            return record.evolve(topic=sink)
        counter_key = f"{key}:{sink}".encode()
        visits = self._decode(self.store.get(counter_key))[0]
        if visits > self.max_revisits:
            self.exceeded += 1
            record = record.evolve(
                value=revisit_error_text(self.max_revisits, record.key, sink, sink_pipeline).encode("utf-8"),
                headers=list(record.headers) + [(PIPELINE_ERRORS, sink_pipeline.encode("utf-8"))],
            )
        self.store.put(counter_key, b"%d:%d" % (visits + 1, now_ms))
        heapq.heappush(self._expiry, (now_ms + self.ttl_ms, counter_key))
        if not from_error_topic and record.value is not None and record.value.startswith(ERROR_PREFIX):
            return record.evolve(topic=self.error_topic)
        return record.evolve(topic=sink)
