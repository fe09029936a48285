"""Build PipelineUpdateMessages without a scheduler (tests, examples, the CLI).

Two levels:

* ``step_update`` / ``create_message``: the proto messages field by field.
* ``pipeline_message(spec)``: a Pipeline resource spec (the YAML users write: ``steps``, ``inputs``,
  ``triggers``, ``tensorMap``, ``output``, ``input.externalInputs`` ...) converted and validated by
  ``scheduler_min`` (spec 1.3-1.5: references normalised, topics resolved, tensor maps fully
  qualified, input/output/error steps added), the same code path the scheduler serves.
"""
from __future__ import annotations

import uuid
from typing import Iterable, Mapping, Sequence

from chainer_api import chainer_pb2
from dataflow.joins.types import JoinType
from dataflow.kafka import TopicNamer

Step = chainer_pb2.PipelineStepUpdate


def join_type(name: str | int | None) -> int:
    """``"inner"|"outer"|"any"`` (or a proto enum int) -> PipelineJoinType; missing -> Inner."""
    if isinstance(name, int):
        return name
    return JoinType.from_name(name).chainer


def topic(topic_name: str, pipeline: str, tensor: str | None = None) -> chainer_pb2.PipelineTopic:
    t = chainer_pb2.PipelineTopic(pipelineName=pipeline, topicName=topic_name)
    if tensor:
        t.tensor = tensor
    return t


def _topics(items) -> list[chainer_pb2.PipelineTopic]:
    out = []
    for it in items or ():
        out.append(it if isinstance(it, chainer_pb2.PipelineTopic) else topic(*it))
    return out


def step_update(sink: str | chainer_pb2.PipelineTopic, sources, *, pipeline: str = "", triggers=(),
                tensor_map: Iterable[tuple[str, str, str]] | Mapping[str, str] = (),
                join: str | int | None = None, triggers_join: str | int | None = None,
                window_ms: int | None = None, batch_size: int | None = None,
                batch_window_ms: int | None = None, batch_rolling: bool = False,
                pass_empty: bool = False) -> chainer_pb2.PipelineStepUpdate:
    """One PipelineStepUpdate. ``sources``/``triggers``: PipelineTopics or ``(topic, pipeline[, tensor])``
    tuples. ``tensor_map``: ``(pipelineName, topicAndTensor, tensorName)`` triples, or a mapping
    ``topicAndTensor -> tensorName`` for ``pipeline``. ``sink``: a topic name (pipelineName =
    ``pipeline``) or a PipelineTopic."""
    u = Step(inputJoinTy=join_type(join), triggersJoinTy=join_type(triggers_join), passEmptyResponses=pass_empty)
    u.sink.CopyFrom(sink if isinstance(sink, chainer_pb2.PipelineTopic) else topic(sink, pipeline))
    u.sources.extend(_topics(sources))
    u.triggers.extend(_topics(triggers))
    items = ((pipeline, k, v) for k, v in tensor_map.items()) if isinstance(tensor_map, Mapping) else tensor_map
    for p, key, name in items:
        u.tensorMap.add(pipelineName=p, topicAndTensor=key, tensorName=name)
    if window_ms is not None:
        u.joinWindowMs = window_ms
    if batch_size is not None or batch_window_ms is not None or batch_rolling:
        u.batch.SetInParent()
        if batch_size is not None:
            u.batch.size = batch_size
        if batch_window_ms is not None:
            u.batch.windowMs = batch_window_ms
        u.batch.rolling = batch_rolling
    return u


def create_message(pipeline: str, updates: Sequence[chainer_pb2.PipelineStepUpdate], *, version: int = 1,
                   uid: str | None = None, namer: TopicNamer | None = None, allow_cycles: bool = False,
                   max_step_revisits: int = 0, timestamp: int = 0) -> chainer_pb2.PipelineUpdateMessage:
    """A Create message around ``updates`` (output/error topics from ``namer``)."""
    namer = namer or TopicNamer()
    msg = chainer_pb2.PipelineUpdateMessage(
        op=chainer_pb2.PipelineUpdateMessage.Create, pipeline=pipeline, version=version,
        uid=uid or uuid.uuid4().hex[:20], pipelineOutputTopic=namer.pipeline_outputs(pipeline),
        pipelineErrorTopic=namer.errors(), allowCycles=allow_cycles, maxStepRevisits=max_step_revisits,
        timestamp=timestamp,
    )
    msg.updates.extend(updates)
    return msg


# ------------------------------------------------------------------ scheduler conversion

def _as_manifest(spec: Mapping) -> dict:
    """A bare spec (``{"name": ..., "steps": ...}``) or a full manifest -> a ``kind: Pipeline`` document."""
    if "spec" in spec:
        body = dict(spec["spec"] or {})
        meta = dict(spec.get("metadata") or {})
        meta["name"] = meta.get("name") or body.get("name")
        body.pop("name", None)
        return {**spec, "kind": spec.get("kind", "Pipeline"), "metadata": meta, "spec": body}
    body = {k: v for k, v in spec.items() if k != "name"}
    return {"kind": "Pipeline", "metadata": {"name": spec["name"]}, "spec": body}


def pipeline_message(spec: Mapping, *, version: int = 1, uid: str | None = None,
                     namer: TopicNamer | None = None, timestamp: int = 0) -> chainer_pb2.PipelineUpdateMessage:
    """Convert a Pipeline resource (``{"name":..., "steps":[...], "output":{...}, "input":{...}}`` or a
    full manifest with ``metadata.name`` and ``spec``) into the scheduler's Create message.

    Exactly the scheduler's conversion (``scheduler_min``), so tests and examples exercise what
    engines receive in production; a spec the scheduler would refuse raises its
    ``PipelineValidationError`` (a ``ValueError``) saying what and where."""
    from scheduler_min.convert import creation_message, from_proto  # scheduler_min imports dataflow
    from scheduler_min.manifest import pipeline_from_manifest

    pv = from_proto(pipeline_from_manifest(_as_manifest(spec)), version=version, uid=uid)
    return creation_message(pv, namer or TopicNamer(), timestamp=timestamp)
