"""Pipeline conversions: scheduler proto -> normalised ``PipelineVersion`` -> Chainer messages.

The three shapes a pipeline takes here:

* the ``scheduler_pb2.Pipeline`` a client sends in ``LoadPipeline`` (built from the user's YAML by
  ``scheduler_min.manifest.pipeline_from_manifest``);
* ``PipelineVersion``: references normalised, validated, with a version and a uid;
* the ``chainer_pb2.PipelineUpdateMessage`` engines receive (``creation_message`` /
  ``deletion_message``).

``pipeline_message(spec)`` goes the whole way from a Pipeline resource spec to the Create message
(tests, examples, the test driver).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from chainer_api import chainer_pb2, scheduler_pb2
from dataflow.joins.types import JoinType
from dataflow.kafka import TopicNamer
from scheduler_min.ids import new_uid
from scheduler_min.manifest import pipeline_from_manifest, pipelines_from_yaml  # noqa: F401 (re-export)
from scheduler_min.pipeline_version import Input, Output, PipelineVersion, Step
from scheduler_min.validation import INPUTS, OUTPUTS, SEP, STEP, PipelineValidationError, step_of, validate

# The protobuf stubs give each message's join enum its own type; at run time the values are plain
# ints, which is how ``PipelineVersion`` keeps join types (as scheduler ``JoinOp`` values).
_ChainerJoin = chainer_pb2.PipelineStepUpdate.PipelineJoinType
_InputJoin = scheduler_pb2.PipelineInput.JoinOp
_OutputJoin = scheduler_pb2.PipelineOutput.JoinOp


def chainer_join(join: int) -> _ChainerJoin:
    """Scheduler ``JoinOp`` -> Chainer ``PipelineJoinType``; a value outside the enum is inner."""
    try:
        return cast(_ChainerJoin, JoinType.from_scheduler(join).chainer)
    except KeyError:
        return cast(_ChainerJoin, JoinType.INNER.chainer)


# ------------------------------------------------------------------------------------------
# normalisation of step references
# ------------------------------------------------------------------------------------------

def normalise_internal_refs(pipeline: str, refs) -> list[str]:
    """``m`` -> ``m.outputs``; ``p`` (this pipeline) -> ``p.inputs``; longer refs unchanged."""
    out = []
    for ref in refs:
        if SEP in ref:
            out.append(ref)
        elif ref == pipeline:
            out.append(f"{ref}.{INPUTS}")
        else:
            out.append(f"{ref}.{OUTPUTS}")
    return out


def normalise_external_refs(refs) -> list[str]:
    """``q`` -> ``q.outputs``; ``q.step.s`` -> ``q.step.s.outputs``; others unchanged."""
    out = []
    for ref in refs:
        parts = ref.split(SEP)
        if ref.strip() and len(parts) == 1:
            out.append(f"{ref}.{OUTPUTS}")
        elif len(parts) == 3 and parts[1] == STEP:
            out.append(f"{ref}.{OUTPUTS}")
        else:
            out.append(ref)
    return out


def from_proto(proto: scheduler_pb2.Pipeline, *, version: int | None = None,
               uid: str | None = None) -> PipelineVersion:
    """Normalise and validate a scheduler ``Pipeline``. Raises ``PipelineValidationError``.

    ``version``/``uid`` override the proto's (the store assigns them); a missing uid gets a new one.
    """
    name = proto.name
    steps: dict[str, Step] = {}
    for sp in proto.steps:
        if sp.name in steps:
            raise PipelineValidationError(f"pipeline {name} has repeated step {sp.name}")
        step = Step(
            name=sp.name,
            inputs=normalise_internal_refs(name, sp.inputs),
            triggers=normalise_internal_refs(name, sp.triggers),
            tensor_map=dict(sp.tensorMap),
            join_window_ms=sp.joinWindowMs if sp.HasField("joinWindowMs") else None,
            inputs_join=int(sp.inputsJoin),
            triggers_join=int(sp.triggersJoin),
            pass_empty_responses=sp.passEmptyResponses,
        )
        if sp.HasField("batch"):
            step.has_batch = True
            step.batch_size = sp.batch.size if sp.batch.HasField("size") else None
            step.batch_window_ms = sp.batch.windowMs if sp.batch.HasField("windowMs") else None
            step.batch_rolling = sp.batch.rolling
        steps[sp.name] = step
    pin = None
    if proto.HasField("input"):
        i = proto.input
        pin = Input(
            external_inputs=normalise_external_refs(i.externalInputs),
            external_triggers=normalise_external_refs(i.externalTriggers),
            join_window_ms=i.joinWindowMs if i.HasField("joinWindowMs") else None,
            inputs_join=int(i.joinType), triggers_join=int(i.triggersJoin), tensor_map=dict(i.tensorMap),
        )
    pout = None
    if proto.HasField("output"):
        o = proto.output
        pout = Output(steps=normalise_internal_refs(name, o.steps), join_window_ms=o.joinWindowMs,
                      steps_join=int(o.stepsJoin), tensor_map=dict(o.tensorMap))
    pv = PipelineVersion(
        name=name, version=proto.version if version is None else version,
        uid=(uid or proto.uid or new_uid()), steps=steps, input=pin, output=pout,
        has_dataflow_spec=proto.HasField("dataflowSpec"),
        clean_topics_on_delete=proto.dataflowSpec.cleanTopicsOnDelete if proto.HasField("dataflowSpec") else False,
        allow_cycles=proto.allowCycles, max_step_revisits=proto.maxStepRevisits,
    )
    if proto.HasField("kubernetesMeta"):
        pv.k8s_namespace = proto.kubernetesMeta.namespace
        pv.k8s_generation = proto.kubernetesMeta.generation
    validate(pv)
    return pv


def _set_batch(target, step: Step) -> None:
    """Copy a step's batch settings (if any) onto a scheduler or Chainer step proto; unset fields stay unset."""
    if not step.has_batch:
        return
    target.batch.SetInParent()
    if step.batch_size is not None:
        target.batch.size = step.batch_size
    if step.batch_window_ms is not None:
        target.batch.windowMs = step.batch_window_ms
    target.batch.rolling = step.batch_rolling


def to_proto(pv: PipelineVersion) -> scheduler_pb2.Pipeline:
    """The normalised pipeline as a scheduler proto (what ``PipelineStatus`` returns)."""
    p = scheduler_pb2.Pipeline(name=pv.name, uid=pv.uid, version=pv.version,
                               allowCycles=pv.allow_cycles, maxStepRevisits=pv.max_step_revisits)
    for s in pv.steps.values():
        sp = p.steps.add(name=s.name, inputs=s.inputs, triggers=s.triggers,
                         inputsJoin=s.inputs_join, triggersJoin=s.triggers_join,
                         passEmptyResponses=s.pass_empty_responses)
        sp.tensorMap.update(s.tensor_map)
        if s.join_window_ms is not None:
            sp.joinWindowMs = s.join_window_ms
        _set_batch(sp, s)
    if pv.input is not None:
        i = pv.input
        p.input.externalInputs.extend(i.external_inputs)
        p.input.externalTriggers.extend(i.external_triggers)
        p.input.joinType = cast(_InputJoin, i.inputs_join)
        p.input.triggersJoin = cast(_InputJoin, i.triggers_join)
        p.input.tensorMap.update(i.tensor_map)
        if i.join_window_ms is not None:
            p.input.joinWindowMs = i.join_window_ms
        p.input.SetInParent()
    if pv.output is not None:
        o = pv.output
        p.output.steps.extend(o.steps)
        p.output.joinWindowMs = o.join_window_ms
        p.output.stepsJoin = cast(_OutputJoin, o.steps_join)
        p.output.tensorMap.update(o.tensor_map)
        p.output.SetInParent()
    if pv.has_dataflow_spec:
        p.dataflowSpec.cleanTopicsOnDelete = pv.clean_topics_on_delete
        p.dataflowSpec.SetInParent()
    if pv.k8s_namespace is not None or pv.k8s_generation is not None:
        p.kubernetesMeta.namespace = pv.k8s_namespace or ""
        p.kubernetesMeta.generation = pv.k8s_generation or 0
        p.kubernetesMeta.SetInParent()
    return p


# ------------------------------------------------------------------------------------------
# topics and tensor maps
# ------------------------------------------------------------------------------------------

def _topic(namer: TopicNamer, pipeline: str, name: str, tensor: str | None = None) -> chainer_pb2.PipelineTopic:
    t = chainer_pb2.PipelineTopic(pipelineName=pipeline, topicName=name)
    if tensor is not None:
        t.tensor = tensor
    return t


def topic_and_tensor(namer: TopicNamer, pipeline: str, ref: str) -> tuple[str, str | None]:
    """``m.outputs[.T]`` / ``p.inputs[.T]`` -> (topic, tensor): pipeline topic iff ``m`` == ``pipeline``."""
    parts = ref.split(SEP)
    tensor = None
    base = ref
    if len(parts) > 2:
        tensor = parts[-1]
        base = SEP.join(parts[:-1])
    topic = namer.pipeline_topic(base) if parts[0] == pipeline else namer.model_topic(base)
    return topic, tensor


def step_sources(namer: TopicNamer, pipeline: str, refs: list[str], *, default_to_input: bool) -> list:
    out = []
    for ref in refs:
        topic, tensor = topic_and_tensor(namer, pipeline, ref)
        out.append(_topic(namer, pipeline, topic, tensor))
    if not out and default_to_input:
        out.append(_topic(namer, pipeline, namer.pipeline_inputs(pipeline)))
    return out


def external_sources(namer: TopicNamer, refs: list[str]) -> list:
    """Input-step sources: ``q.(inputs|outputs)[.T]`` or ``q.step.s.(inputs|outputs)[.T]``,
    tagged with the *other* pipeline's name (its records carry that ``pipeline`` header)."""
    out = []
    for ref in refs:
        parts = ref.split(SEP)
        if parts[1] in (INPUTS, OUTPUTS):
            topic = namer.pipeline_topic(SEP.join(parts[:2]))
            tensor = parts[2] if len(parts) > 2 else None
        else:
            topic = namer.model_topic(SEP.join(parts[2:4]))
            tensor = parts[4] if len(parts) > 4 else None
        out.append(_topic(namer, parts[0], topic, tensor))
    return out


def qualified_tensor_map(namer: TopicNamer, pipeline: str, tensor_map: dict[str, str]) -> list:
    """The step's renames as Chainer mappings, in key order: the map comes from a protobuf map,
    whose iteration order varies between processes, and equal versions must give equal messages."""
    out = []
    for key, value in sorted(tensor_map.items()):
        topic = namer.pipeline_topic(key) if step_of(key) == pipeline else namer.model_topic(key)
        out.append(chainer_pb2.PipelineTensorMapping(pipelineName=pipeline, topicAndTensor=topic, tensorName=value))
    return out


def qualified_input_tensor_map(namer: TopicNamer, tensor_map: dict[str, str]) -> list:
    """As ``qualified_tensor_map``, for the pipeline's input (key order, for the same reason)."""
    out = []
    for key, value in sorted(tensor_map.items()):
        parts = key.split(SEP)
        if len(parts) == 3:
            topic = namer.pipeline_topic(key)
        elif len(parts) == 5:
            topic = namer.model_topic(SEP.join(parts[2:]))
        else:
            topic = ""  # the reference leaves other shapes empty (no effect downstream)
        out.append(chainer_pb2.PipelineTensorMapping(pipelineName=parts[0], topicAndTensor=topic, tensorName=value))
    return out


# ------------------------------------------------------------------------------------------
# Chainer messages
# ------------------------------------------------------------------------------------------

def _step_update(namer: TopicNamer, pv: PipelineVersion, step: Step) -> chainer_pb2.PipelineStepUpdate:
    u = chainer_pb2.PipelineStepUpdate(
        sources=step_sources(namer, pv.name, step.inputs, default_to_input=True),
        triggers=step_sources(namer, pv.name, step.triggers, default_to_input=False),
        sink=_topic(namer, pv.name, namer.model_inputs(step.name)),
        tensorMap=qualified_tensor_map(namer, pv.name, step.tensor_map),
        inputJoinTy=chainer_join(step.inputs_join), triggersJoinTy=chainer_join(step.triggers_join),
        passEmptyResponses=step.pass_empty_responses,
    )
    if step.join_window_ms is not None:
        u.joinWindowMs = step.join_window_ms
    _set_batch(u, step)
    return u


def _input_update(namer: TopicNamer, pv: PipelineVersion) -> chainer_pb2.PipelineStepUpdate:
    i = pv.input
    assert i is not None  # called only for a pipeline with an input
    u = chainer_pb2.PipelineStepUpdate(
        sources=external_sources(namer, i.external_inputs),
        triggers=external_sources(namer, i.external_triggers),
        sink=_topic(namer, pv.name, namer.pipeline_inputs(pv.name)),
        tensorMap=qualified_input_tensor_map(namer, i.tensor_map),
        inputJoinTy=chainer_join(i.inputs_join), triggersJoinTy=chainer_join(i.triggers_join),
    )
    if i.join_window_ms is not None:
        u.joinWindowMs = i.join_window_ms
    return u


def _output_update(namer: TopicNamer, pv: PipelineVersion) -> chainer_pb2.PipelineStepUpdate:
    o = pv.output
    assert o is not None  # called only for a pipeline with an output
    return chainer_pb2.PipelineStepUpdate(
        sources=step_sources(namer, pv.name, o.steps, default_to_input=True),
        sink=_topic(namer, pv.name, namer.pipeline_outputs(pv.name)),
        tensorMap=qualified_tensor_map(namer, pv.name, o.tensor_map),
        joinWindowMs=o.join_window_ms,  # always set on the output step
        inputJoinTy=chainer_join(o.steps_join),
    )


def _error_update(namer: TopicNamer, pv: PipelineVersion) -> chainer_pb2.PipelineStepUpdate:
    return chainer_pb2.PipelineStepUpdate(
        sources=[_topic(namer, pv.name, namer.errors())],
        sink=_topic(namer, pv.name, namer.pipeline_outputs(pv.name)),
        inputJoinTy=chainer_pb2.PipelineStepUpdate.Inner,
    )


def creation_message(pv: PipelineVersion, namer: TopicNamer, timestamp: int = 0) -> chainer_pb2.PipelineUpdateMessage:
    """The Create message: step updates, then input, output (if present) and the error step last."""
    updates = [_step_update(namer, pv, s) for s in pv.steps.values()]
    if pv.input is not None:
        updates.append(_input_update(namer, pv))
    if pv.output is not None:
        updates.append(_output_update(namer, pv))
    updates.append(_error_update(namer, pv))
    return chainer_pb2.PipelineUpdateMessage(
        op=chainer_pb2.PipelineUpdateMessage.Create, pipeline=pv.name, version=pv.version, uid=pv.uid,
        updates=updates, pipelineOutputTopic=namer.pipeline_outputs(pv.name),
        pipelineErrorTopic=namer.errors(), allowCycles=pv.allow_cycles,
        maxStepRevisits=pv.max_step_revisits, timestamp=timestamp,
    )


def deletion_message(pv: PipelineVersion, namer: TopicNamer, *, keep_topics: bool,
                     timestamp: int = 0) -> chainer_pb2.PipelineUpdateMessage:
    """The Delete message; names the pipeline's own topics only when they are to be removed."""
    msg = chainer_pb2.PipelineUpdateMessage(
        op=chainer_pb2.PipelineUpdateMessage.Delete, pipeline=pv.name, version=pv.version,
        uid=pv.uid, timestamp=timestamp)
    if pv.clean_topics_on_delete and not keep_topics:
        msg.updates.append(chainer_pb2.PipelineStepUpdate(
            sources=[_topic(namer, pv.name, namer.pipeline_inputs(pv.name))],
            sink=_topic(namer, pv.name, namer.pipeline_outputs(pv.name))))
    return msg


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

    Exactly the scheduler's conversion, so tests and examples exercise what
    engines receive in production; a spec the scheduler would refuse raises its
    ``PipelineValidationError`` (a ``ValueError``) saying what and where."""
    pv = from_proto(pipeline_from_manifest(_as_manifest(spec)), version=version, uid=uid)
    return creation_message(pv, namer or TopicNamer(), timestamp=timestamp)
