"""The compiled description of a pipeline version: plain, immutable data (no stores, no Kafka).

``build_topology`` produces a ``Topology``; ``dataflow.topology.pipeline.Pipeline`` instantiates
processors for it. Keeping the two apart lets the CLI, the scheduler and tests inspect and validate
a pipeline without touching state.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dataflow.joins.types import JoinType
from dataflow.kafka import INPUTS, OUTPUTS, topic_suffix
from dataflow.topology.render import as_dict, describe, mermaid

__all__ = ["BatchSpec", "ChainType", "JoinType", "SourceNode", "StepKind", "StepNode", "Topology"]


class ChainType(str, enum.Enum):
    """How one source's record becomes the sink's message, from the topic suffixes."""

    OUTPUT_INPUT = "OUTPUT_INPUT"      # response -> convert to request
    INPUT_INPUT = "INPUT_INPUT"        # request  -> filtered request
    OUTPUT_OUTPUT = "OUTPUT_OUTPUT"    # response -> filtered response
    INPUT_OUTPUT = "INPUT_OUTPUT"      # request  -> convert to response
    PASSTHROUGH = "PASSTHROUGH"        # bytes unchanged (e.g. errors -> outputs)

    @classmethod
    def between(cls, source_topic: str, sink_topic: str) -> ChainType:
        pair = (topic_suffix(source_topic), topic_suffix(sink_topic))
        return {
            (INPUTS, INPUTS): cls.INPUT_INPUT,
            (INPUTS, OUTPUTS): cls.INPUT_OUTPUT,
            (OUTPUTS, OUTPUTS): cls.OUTPUT_OUTPUT,
            (OUTPUTS, INPUTS): cls.OUTPUT_INPUT,
        }.get(pair, cls.PASSTHROUGH)


class StepKind(str, enum.Enum):
    MODEL = "model"        # sink model.<m>.inputs: a pipeline step
    INPUT = "input"        # sink pipeline.<this>.inputs: pipeline-to-pipeline input step
    OUTPUT = "output"      # sink pipeline.<this>.outputs from model/pipeline topics
    ERROR = "error"        # sink pipeline.<this>.outputs from the error topic
    OTHER = "other"        # any other valid sink (e.g. another pipeline's topic)


@dataclass(frozen=True, slots=True)
class SourceNode:
    """One grouped source (or trigger) of a step: a (topic, pipelineName) pair.

    ``tensors`` is the tensor subset (empty = all tensors). ``renames`` maps an original tensor
    name to its new name (resolved from the step's tensorMap entries whose pipelineName equals
    this source's pipelineName and whose key is ``<topic>.<tensor>``). Triggers never rename.
    """

    topic: str
    pipeline: str
    chain: ChainType
    tensors: frozenset[str] = frozenset()
    tensor_order: tuple[str, ...] = ()          # tensors in first-seen order (for display)
    renames: Mapping[str, str] = field(default_factory=dict)

    @property
    def subset(self) -> frozenset[str] | None:
        return self.tensors or None

    def label(self) -> str:
        tensors = f" tensors={list(self.tensor_order)}" if self.tensor_order else ""
        renames = f" renames={dict(sorted(self.renames.items()))}" if self.renames else ""
        return f"{self.topic} [pipeline={self.pipeline}] {self.chain.value}{tensors}{renames}"


@dataclass(frozen=True, slots=True)
class BatchSpec:
    size: int = 0
    window_ms: int = 0
    rolling: bool = False

    @property
    def enabled(self) -> bool:
        return self.size > 0 or self.window_ms > 0


@dataclass(frozen=True, slots=True)
class StepNode:
    """One PipelineStepUpdate, compiled."""

    name: str                      # unique within the pipeline; used to name state stores
    kind: StepKind
    sink: str
    sink_pipeline: str
    sources: tuple[SourceNode, ...]
    triggers: tuple[SourceNode, ...]
    join: JoinType
    triggers_join: JoinType
    window_ms: int
    batch: BatchSpec
    pass_empty: bool

    @property
    def is_join(self) -> bool:
        return len(self.sources) > 1

    @property
    def produces_requests(self) -> bool:
        return topic_suffix(self.sink) == INPUTS


@dataclass(frozen=True, slots=True)
class Topology:
    pipeline: str
    version: int
    uid: str
    output_topic: str
    error_topic: str
    allow_cycles: bool
    max_step_revisits: int
    steps: tuple[StepNode, ...]
    cycle_counter_ttl_ms: int = 3_600_000
    step_latency: bool = True          # time each step per record (TopologySettings.step_latency)

    @property
    def source_topics(self) -> frozenset[str]:
        return frozenset(s.topic for step in self.steps for s in step.sources + step.triggers)

    @property
    def sink_topics(self) -> frozenset[str]:
        return frozenset(step.sink for step in self.steps)

    @property
    def all_topics(self) -> frozenset[str]:
        topics = set(self.source_topics) | set(self.sink_topics)
        for t in (self.output_topic, self.error_topic):
            if t:
                topics.add(t)
        return frozenset(topics)

    def step(self, name: str) -> StepNode:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def describe(self) -> str:
        return describe(self)

    def mermaid(self) -> str:
        return mermaid(self)

    def as_dict(self) -> dict[str, Any]:
        return as_dict(self)
