"""A pipeline version as the scheduler keeps it: references normalised, validated, with a version
and a uid (``convert`` builds it from a ``scheduler_pb2.Pipeline`` and turns it into Chainer
messages; ``validation`` checks it)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dataflow.joins.types import JoinType


@dataclass
class Step:
    name: str
    inputs: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    tensor_map: dict[str, str] = field(default_factory=dict)
    join_window_ms: int | None = None
    inputs_join: int = JoinType.INNER.scheduler  # join types are kept as scheduler JoinOp values
    triggers_join: int = JoinType.INNER.scheduler
    batch_size: int | None = None
    batch_window_ms: int | None = None
    batch_rolling: bool = False
    has_batch: bool = False
    pass_empty_responses: bool = False  # our extension: forward messages left with no tensors


@dataclass
class Input:
    external_inputs: list[str] = field(default_factory=list)
    external_triggers: list[str] = field(default_factory=list)
    join_window_ms: int | None = None
    inputs_join: int = JoinType.INNER.scheduler
    triggers_join: int = JoinType.INNER.scheduler
    tensor_map: dict[str, str] = field(default_factory=dict)


@dataclass
class Output:
    steps: list[str] = field(default_factory=list)
    join_window_ms: int = 0
    steps_join: int = JoinType.INNER.scheduler
    tensor_map: dict[str, str] = field(default_factory=dict)


@dataclass
class PipelineVersion:
    name: str
    version: int
    uid: str
    steps: dict[str, Step]
    input: Input | None = None
    output: Output | None = None
    clean_topics_on_delete: bool = False
    has_dataflow_spec: bool = False
    allow_cycles: bool = False
    max_step_revisits: int = 0
    k8s_namespace: str | None = None
    k8s_generation: int | None = None
