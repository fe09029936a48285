"""A pipeline version as the scheduler keeps it: references normalised, validated, with a version
and a uid (``convert`` builds it from a ``scheduler_pb2.Pipeline`` and turns it into Chainer
messages; ``validation`` checks it)."""
from __future__ import annotations

from dataclasses import dataclass, field

# Internal join types equal the scheduler proto's JoinOp values (INNER/OUTER/ANY = 0/1/2);
# the Chainer enum is shifted by one (Unknown=0, Inner=1, Outer=2, Any=3).
JOIN_INNER, JOIN_OUTER, JOIN_ANY = 0, 1, 2


@dataclass
class Step:
    name: str
    inputs: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    tensor_map: dict[str, str] = field(default_factory=dict)
    join_window_ms: int | None = None
    inputs_join: int = JOIN_INNER
    triggers_join: int = JOIN_INNER
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
    inputs_join: int = JOIN_INNER
    triggers_join: int = JOIN_INNER
    tensor_map: dict[str, str] = field(default_factory=dict)


@dataclass
class Output:
    steps: list[str] = field(default_factory=list)
    join_window_ms: int = 0
    steps_join: int = JOIN_INNER
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
