"""Build PipelineUpdateMessages without a scheduler (tests, examples, the CLI).

Two levels:

* ``step_update`` / ``create_message``: the proto messages field by field.
* ``pipeline_message(spec)``: a Pipeline resource spec (the YAML users write: ``steps``, ``inputs``,
  ``triggers``, ``tensorMap``, ``output``, ``input.externalInputs`` ...) converted the way the
  scheduler does (spec 1.3-1.5): references normalised, topics resolved, tensor maps fully
  qualified, input/output/error steps added. No validation beyond what the conversion needs;
  ``build_topology`` validates the result.
"""
from __future__ import annotations

import uuid
from typing import Iterable, Mapping, Sequence

from chainer_api import chainer_pb2
from dataflow.kafka import TopicNamer

Step = chainer_pb2.PipelineStepUpdate
_JOINS = {None: Step.Inner, "": Step.Inner, "inner": Step.Inner, "outer": Step.Outer, "any": Step.Any}


def join_type(name: str | int | None) -> int:
    """``"inner"|"outer"|"any"`` (or a proto enum int) -> PipelineJoinType; missing -> Inner."""
    if isinstance(name, int):
        return name
    try:
        return _JOINS[name.lower() if isinstance(name, str) else name]
    except KeyError:
        raise ValueError(f"unknown join type {name!r} (expected inner, outer or any)") from None


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


# ------------------------------------------------------------------ scheduler-style conversion

def _resolve(namer: TopicNamer, pipeline: str, ref: str) -> tuple[str, str | None]:
    """Normalised step reference -> (topic, tensor) (spec 1.3 GetModelOrPipelineTopicAndTensor)."""
    parts = ref.split(".")
    base = ".".join(parts[:2])
    tensor = parts[2] if len(parts) > 2 else None
    name = namer.pipeline_topic(base) if parts[0] == pipeline else namer.model_topic(base)
    return name, tensor


def _normalise(pipeline: str, ref: str) -> str:
    if "." in ref:
        return ref
    return f"{ref}.inputs" if ref == pipeline else f"{ref}.outputs"


def _external(namer: TopicNamer, ref: str) -> tuple[str, str, str | None]:
    """External reference -> (pipelineName, topic, tensor) (spec 1.3 externalInputs table)."""
    parts = ref.split(".")
    q = parts[0]
    if len(parts) >= 3 and parts[1] == "step":
        io = parts[3] if len(parts) > 3 else "outputs"
        return q, namer.model_topic(f"{parts[2]}.{io}"), parts[4] if len(parts) > 4 else None
    io = parts[1] if len(parts) > 1 else "outputs"
    return q, namer.pipeline_topic(f"{q}.{io}"), parts[2] if len(parts) > 2 else None


def _step_tensor_map(namer: TopicNamer, pipeline: str, tmap: Mapping[str, str] | None):
    out = []
    for key, name in (tmap or {}).items():
        first = key.split(".")[0]
        qualified = namer.pipeline_topic(key) if first == pipeline else namer.model_topic(key)
        out.append((pipeline, qualified, name))
    return out


def _input_tensor_map(namer: TopicNamer, tmap: Mapping[str, str] | None):
    out = []
    for key, name in (tmap or {}).items():
        parts = key.split(".")
        if len(parts) == 3:
            out.append((parts[0], namer.pipeline_topic(key), name))
        elif len(parts) == 5 and parts[1] == "step":
            out.append((parts[0], namer.model_topic(".".join(parts[2:])), name))
        else:
            out.append((parts[0], "", name))
    return out


def pipeline_message(spec: Mapping, *, version: int = 1, uid: str | None = None,
                     namer: TopicNamer | None = None, timestamp: int = 0) -> chainer_pb2.PipelineUpdateMessage:
    """Convert a Pipeline resource (``{"name":..., "steps":[...], "output":{...}, "input":{...}}`` or a
    full manifest with ``metadata.name`` and ``spec``) into the scheduler's Create message."""
    if "spec" in spec:
        name = spec.get("metadata", {}).get("name") or spec["spec"].get("name")
        spec = dict(spec["spec"], name=name)
    namer = namer or TopicNamer()
    p = spec["name"]
    updates = []
    for s in spec.get("steps") or ():
        refs = [_normalise(p, r) for r in s.get("inputs") or ()]
        sources = [(t, p, tensor) for t, tensor in (_resolve(namer, p, r) for r in refs)] \
            or [(namer.pipeline_inputs(p), p)]
        triggers = [(t, p, tensor) for t, tensor in (_resolve(namer, p, _normalise(p, r)) for r in s.get("triggers") or ())]
        batch = s.get("batch") or {}
        updates.append(step_update(
            namer.model_inputs(s["name"]), sources, pipeline=p, triggers=triggers,
            tensor_map=_step_tensor_map(namer, p, s.get("tensorMap")),
            join=s.get("inputsJoinType", s.get("joinType")), triggers_join=s.get("triggersJoinType"),
            window_ms=s.get("joinWindowMs"), batch_size=batch.get("size"), batch_window_ms=batch.get("windowMs"),
        ))
    if spec.get("input") is not None:
        inp = spec["input"]
        sources = [(t, q, tensor) for q, t, tensor in (_external(namer, r) for r in inp.get("externalInputs") or ())]
        triggers = [(t, q, tensor) for q, t, tensor in (_external(namer, r) for r in inp.get("externalTriggers") or ())]
        updates.append(step_update(
            namer.pipeline_inputs(p), sources, pipeline=p, triggers=triggers,
            tensor_map=_input_tensor_map(namer, inp.get("tensorMap")), join=inp.get("joinType"),
            triggers_join=inp.get("triggersJoinType"), window_ms=inp.get("joinWindowMs"),
        ))
    if spec.get("output") is not None:
        out = spec["output"]
        refs = [_normalise(p, r) for r in out.get("steps") or ()]
        sources = [(t, p, tensor) for t, tensor in (_resolve(namer, p, r) for r in refs)] \
            or [(namer.pipeline_inputs(p), p)]
        u = step_update(namer.pipeline_outputs(p), sources, pipeline=p,
                        tensor_map=_step_tensor_map(namer, p, out.get("tensorMap")),
                        join=out.get("stepsJoin"), window_ms=out.get("joinWindowMs") or 0)
        u.triggersJoinTy = Step.Unknown
        updates.append(u)
    updates.append(step_update(namer.pipeline_outputs(p), [(namer.errors(), p)], pipeline=p))
    return create_message(p, updates, version=version, uid=uid, namer=namer, timestamp=timestamp,
                          allow_cycles=bool(spec.get("allowCycles")), max_step_revisits=int(spec.get("maxStepRevisits") or 0))
