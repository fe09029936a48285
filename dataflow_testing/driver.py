"""In-memory test driver: run compiled pipelines end to end without Kafka.

Topics are lists, the clock is manual, fake models stand in for the model gateway::

    from dataflow_testing.driver import PipelineTestDriver
    from scheduler_min.convert import pipeline_message
    from dataflow import oip

    msg = pipeline_message({"name": "tfsimples",
                            "steps": [{"name": "tfsimple1"},
                                      {"name": "tfsimple2", "inputs": ["tfsimple1"],
                                       "tensorMap": {"tfsimple1.outputs.OUTPUT0": "INPUT0",
                                                     "tfsimple1.outputs.OUTPUT1": "INPUT1"}}],
                            "output": {"steps": ["tfsimple2"]}})
    driver = PipelineTestDriver(msg)
    driver.model("tfsimple1", lambda req: ...)        # ModelInferRequest -> ModelInferResponse
    driver.model("tfsimple2", lambda req: ...)
    driver.pipe(driver.inputs_topic, oip.make_request({"INPUT0": ..., "INPUT1": ...}), key="0.tfsimples.r1")
    [out] = driver.read(driver.outputs_topic)         # Records: key, headers, value, timestamp

Behaviour:

* ``pipe`` appends a record to a topic and delivers it, then everything it causes, breadth first:
  records produced to topics a pipeline consumes are fed back (multi-step pipelines, cycles and
  pipeline-to-pipeline chains run to completion), and records on ``model.<m>.inputs`` of a faked
  model are answered on ``model.<m>.outputs`` (same key, headers, partition; timestamp = clock).
  A fake model that raises produces the error text to the errors topic with
  ``seldon-pipeline-errors: <model>``, like the model gateway.
* Records piped without ``headers`` get ``pipeline: <first pipeline's name>`` (what the gateway adds).
  Pass ``headers=[]`` to send none.
* ``advance(ms)`` moves the clock and runs ``punctuate`` (outer-join windows, batch windows,
  state expiry); released records are delivered the same way.
* ``read(topic)`` drains and returns the records produced to a topic since the last read
  (piped records included); ``peek`` returns them without draining.
* Timestamps default to the driver clock (``start_ms`` + advances).
"""
from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import Message

from chainer_api import chainer_pb2
from dataflow import oip
from dataflow.headers import PIPELINE, PIPELINE_ERRORS, normalise
from dataflow.kafka import partition_for_key
from dataflow.records import Record
from dataflow.state.memory import MemoryStore
from dataflow.topology import TopologySettings, compile_pipeline
from dataflow.topology.compiled import CompiledPipeline
from dataflow.topology.stats import PipelineStats

ModelFn = Callable[[Any], Message | bytes | bytearray]  # ModelInferRequest -> ModelInferResponse (or its bytes)


class DriverLoopError(RuntimeError):
    """A single ``pipe``/``advance`` caused more deliveries than ``max_deliveries`` (an unbounded cycle)."""


class PipelineTestDriver:
    def __init__(self, msg_or_compiled, *, start_ms: int = 0, partitions: int = 1,
                 settings: TopologySettings | None = None, max_deliveries: int = 100_000):
        items = msg_or_compiled if isinstance(msg_or_compiled, (list, tuple)) else [msg_or_compiled]
        if not items:
            raise ValueError("PipelineTestDriver needs at least one pipeline")
        self.stores: dict[tuple[str, str], MemoryStore] = {}
        self.pipelines: list[CompiledPipeline] = [self._compile(i, settings) for i in items]
        self.now_ms = start_ms
        self.partitions = partitions
        self.max_deliveries = max_deliveries
        self._topics: dict[str, list[Record]] = defaultdict(list)
        self._models: dict[str, tuple[str, ModelFn]] = {}   # inputs topic -> (model name, fn)
        self._seq = 0
        first = self.pipelines[0]
        self.pipeline = first.pipeline
        self.outputs_topic = first.topology.output_topic if hasattr(first, "topology") else ""
        self.errors_topic = first.topology.error_topic if hasattr(first, "topology") else ""
        suffix = f".pipeline.{self.pipeline}.outputs"
        self._base = self.outputs_topic[: -len(suffix)] if self.outputs_topic.endswith(suffix) else "seldon.default"
        self.inputs_topic = f"{self._base}.pipeline.{self.pipeline}.inputs"

    def _compile(self, item, settings) -> CompiledPipeline:
        if not isinstance(item, chainer_pb2.PipelineUpdateMessage):
            if not isinstance(item, CompiledPipeline):
                raise TypeError(f"expected a PipelineUpdateMessage or a CompiledPipeline, got {type(item).__name__}")
            return item

        def factory(name: str, _p=item.pipeline) -> MemoryStore:
            store = MemoryStore(name)
            self.stores[(_p, name)] = store
            return store

        return compile_pipeline(item, store_factory=factory, settings=settings)

    # -- topic names ------------------------------------------------------------------------
    def model_inputs(self, model: str) -> str:
        return f"{self._base}.model.{model}.inputs"

    def model_outputs(self, model: str) -> str:
        return f"{self._base}.model.{model}.outputs"

    # -- fakes --------------------------------------------------------------------------------
    def model(self, name: str, fn: ModelFn) -> None:
        """Fake model ``name``: ``fn(ModelInferRequest) -> ModelInferResponse`` (or bytes); raising
        sends ``str(exc)`` to the errors topic with ``seldon-pipeline-errors: <name>``."""
        self._models[self.model_inputs(name)] = (name, fn)

    # -- driving ------------------------------------------------------------------------------
    def pipe(self, topic: str, value, *, key: str | None = None, headers=None,
             timestamp: int | None = None) -> Record:
        """Produce one record to ``topic`` and run everything it triggers. ``value``: bytes or a
        protobuf message. Returns the record as appended to the topic."""
        if key is None:
            self._seq += 1
            key = f"0.{self.pipeline}.req-{self._seq}"
        if headers is None:
            headers = [(PIPELINE, self.pipeline.encode())]
        if value is not None and not isinstance(value, (bytes, bytearray)):
            value = value.SerializeToString()
        record = Record(topic=topic, key=key, value=None if value is None else bytes(value),
                        headers=normalise(headers), timestamp=self.now_ms if timestamp is None else timestamp,
                        partition=partition_for_key(key, self.partitions))
        self._run([record])
        return record

    def advance(self, ms: int) -> list[Record]:
        """Move the clock forward ``ms``, punctuating at every pending deadline on the way (so a
        batch window or join window closes at its own time) and at the end; returns the records
        released by punctuation (everything they cause downstream is delivered too)."""
        if ms < 0:
            raise ValueError(f"advance needs a non-negative duration, got {ms}")
        target = self.now_ms + ms
        released: list[Record] = []
        for _ in range(self.max_deliveries):
            due = [d for d in self._deadlines() if self.now_ms < d <= target]
            if not due:
                break
            self.now_ms = min(due)
            released.extend(self._punctuate())
        self.now_ms = target
        released.extend(self._punctuate())
        return released

    def _deadlines(self) -> list[int]:
        out = []
        for p in self.pipelines:
            deadline = getattr(p, "next_deadline", None)
            d = deadline() if deadline else None
            if d is not None:
                out.append(d)
        return out

    def _punctuate(self) -> list[Record]:
        released: list[Record] = []
        for p in self.pipelines:
            released.extend(self._address(p.punctuate(self.now_ms)))
        self._run(released)
        return released

    def _address(self, records: Iterable[Record]) -> list[Record]:
        return [r.evolve(partition=partition_for_key(r.key, self.partitions)) for r in records]

    def _run(self, records: list[Record]) -> None:
        queue = deque(records)
        deliveries = 0
        while queue:
            record = queue.popleft()
            deliveries += 1
            if deliveries > self.max_deliveries:
                raise DriverLoopError(f"more than {self.max_deliveries} deliveries from one call; "
                                      f"last record on {record.topic} key {record.key}")
            self._topics[record.topic].append(record)
            for p in self.pipelines:
                if record.topic in p.source_topics:
                    queue.extend(self._address(p.process(record, self.now_ms)))
            if record.topic in self._models:
                queue.append(self._call_model(record))
        self._checkpoint()

    def _checkpoint(self) -> None:
        """What a runtime does before each checkpoint: processors write what they hold in memory
        to their stores (so ``stores`` shows the state a checkpoint would persist)."""
        for p in self.pipelines:
            flush = getattr(p, "flush", None)
            if flush is not None:
                flush()

    def _call_model(self, record: Record) -> Record:
        name, fn = self._models[record.topic]
        try:
            try:
                request = oip.parse_request(record.value)
            except oip.CodecError:   # the model gateway also accepts a response as a request
                request = oip.response_as_request(oip.parse_response(record.value))
            response = fn(request)
            value = response if isinstance(response, (bytes, bytearray)) else response.SerializeToString()
        except Exception as exc:
            return record.evolve(topic=self.errors_topic, value=str(exc).encode("utf-8"),
                                 headers=list(record.headers) + [(PIPELINE_ERRORS, name.encode())],
                                 timestamp=self.now_ms)
        return record.evolve(topic=self.model_outputs(name), value=bytes(value), timestamp=self.now_ms)

    # -- reading ------------------------------------------------------------------------------
    def read(self, topic: str) -> list[Record]:
        """Records produced to ``topic`` since the last read (drains)."""
        return self._topics.pop(topic, [])

    def peek(self, topic: str) -> list[Record]:
        return list(self._topics.get(topic, []))

    def topics(self) -> list[str]:
        """Topics holding unread records."""
        return sorted(t for t, rs in self._topics.items() if rs)

    def stats(self, pipeline: str | None = None) -> PipelineStats:
        """The ``PipelineStats`` of ``pipeline`` (default: the first)."""
        for p in self.pipelines:
            if pipeline is None or p.pipeline == pipeline:
                # the counters are the topology Pipeline's, not part of the CompiledPipeline protocol
                return p.stats  # type: ignore[attr-defined]
        raise KeyError(pipeline)
