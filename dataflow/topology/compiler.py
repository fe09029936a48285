"""PipelineUpdateMessage -> Topology: grouping, chain types, renames, joins, validation.

Pure: no stores, no Kafka. Every replica compiles the same message to the same topology because
steps are sorted by (sink topic, comma-joined source topics) like the reference, and sources keep
their first-seen order (the join merge order).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import replace

from chainer_api import chainer_pb2
from dataflow.kafka import ERRORS, topic_suffix
from dataflow.topology.errors import TopologyError
from dataflow.topology.model import (
    BatchSpec,
    ChainType,
    JoinType,
    SourceNode,
    StepKind,
    StepNode,
    Topology,
)
from dataflow.topology.settings import TopologySettings

log = logging.getLogger(__name__)

_DATA_TOPIC = re.compile(r"^(?P<base>.+)\.(?P<kind>model|pipeline)\.(?P<name>[^.]+)\.(?P<suffix>inputs|outputs)$")


def sort_key(update: chainer_pb2.PipelineStepUpdate) -> tuple[str, str]:
    """The reference's deterministic step order: sink topic, then comma-joined source topics."""
    return update.sink.topicName, ",".join(s.topicName for s in update.sources)


def build_topology(msg: chainer_pb2.PipelineUpdateMessage,
                   settings: TopologySettings | object = None) -> Topology:
    """Compile and validate ``msg``; raises ``TopologyError`` naming the step and the reason."""
    settings = TopologySettings.coerce(settings)
    if not msg.pipeline:
        raise TopologyError("", "the message has no pipeline name")
    if not msg.updates:
        raise TopologyError("", f"pipeline {msg.pipeline} has no steps (updates is empty)")
    steps: list[StepNode] = []
    used_names: set[str] = set()
    for update in sorted(msg.updates, key=sort_key):
        step = _compile_step(msg, update, settings)
        name = step.name
        n = 2
        while name in used_names:
            name = f"{step.name}#{n}"
            n += 1
        used_names.add(name)
        if name != step.name:
            step = replace(step, name=name)
        steps.append(step)
    return Topology(
        pipeline=msg.pipeline, version=msg.version, uid=msg.uid,
        output_topic=msg.pipelineOutputTopic, error_topic=msg.pipelineErrorTopic,
        allow_cycles=msg.allowCycles, max_step_revisits=msg.maxStepRevisits,
        steps=tuple(steps), cycle_counter_ttl_ms=settings.cycle_counter_ttl_ms,
        step_latency=settings.step_latency,
    )


def _join_type(sink: str, value: int, field: str) -> JoinType:
    try:
        return JoinType.from_chainer(value)
    except KeyError:
        raise TopologyError(sink, f"unknown {field} value {value} (expected 0-3: Unknown/Inner/Outer/Any)") from None


def _group(sink: str, topics: Iterable[chainer_pb2.PipelineTopic], what: str) -> list[tuple[str, str, list[str]]]:
    """Group PipelineTopics by (topicName, pipelineName) in first-seen order; tensor subset = union
    of non-empty tensors (so a bare reference plus a tensor reference keeps only the tensor)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for i, t in enumerate(topics):
        if not t.topicName:
            raise TopologyError(sink, f"{what} #{i} has an empty topicName")
        if not t.pipelineName:
            raise TopologyError(sink, f"{what} {t.topicName} has an empty pipelineName "
                                      "(header filter would match nothing)")
        tensors = groups.setdefault((t.topicName, t.pipelineName), [])
        if t.HasField("tensor") and t.tensor and t.tensor not in tensors:
            tensors.append(t.tensor)
    return [(topic, pipeline, tensors) for (topic, pipeline), tensors in groups.items()]


def _renames(update: chainer_pb2.PipelineStepUpdate, topic: str, pipeline: str) -> dict[str, str]:
    """tensorMap entries for this source: same pipelineName, key ``<topic>.<tensor>``."""
    prefix = topic + "."
    out: dict[str, str] = {}
    for m in update.tensorMap:
        if m.pipelineName != pipeline or not m.topicAndTensor.startswith(prefix):
            continue
        original = m.topicAndTensor[len(prefix):]
        if original and "." not in original and m.tensorName:
            out[original] = m.tensorName
    return out


def _kind_and_name(msg: chainer_pb2.PipelineUpdateMessage, sink: str,
                   sources: list[tuple[str, str, list[str]]]) -> tuple[StepKind, str]:
    m = _DATA_TOPIC.match(sink)
    if m is None:
        raise TopologyError(sink, "sink is not a model or pipeline inputs/outputs topic "
                                  "({prefix}.{ns}.(model|pipeline).<name>.(inputs|outputs))")
    if m["kind"] == "model" and m["suffix"] == "inputs":
        return StepKind.MODEL, m["name"]
    if m["kind"] == "pipeline" and m["name"] == msg.pipeline:
        if m["suffix"] == "inputs":
            return StepKind.INPUT, "input"
        is_error = all(t == msg.pipelineErrorTopic or topic_suffix(t) == ERRORS for t, _, _ in sources)
        return (StepKind.ERROR, "error") if is_error else (StepKind.OUTPUT, "output")
    return StepKind.OTHER, sink


def _compile_step(msg: chainer_pb2.PipelineUpdateMessage, update: chainer_pb2.PipelineStepUpdate,
                  settings: TopologySettings) -> StepNode:
    sink = update.sink.topicName
    if not sink:
        raise TopologyError("", f"a step of pipeline {msg.pipeline} has no sink topic")
    groups = _group(sink, update.sources, "source")
    if not groups:
        raise TopologyError(sink, "step has no sources")
    trigger_groups = _group(sink, update.triggers, "trigger")
    kind, name = _kind_and_name(msg, sink, groups)
    join = _join_type(sink, update.inputJoinTy, "inputJoinTy")
    triggers_join = _join_type(sink, update.triggersJoinTy, "triggersJoinTy")

    sources = tuple(
        SourceNode(topic=t, pipeline=p, chain=ChainType.between(t, sink), tensors=frozenset(ts),
                   tensor_order=tuple(ts), renames=_renames(update, t, p))
        for t, p, ts in groups
    )
    if len(sources) > 1:
        custom = [s.topic for s in sources if s.chain is ChainType.PASSTHROUGH]
        if custom:
            raise TopologyError(sink, f"Can't join custom data: source {custom[0]} is neither an inputs "
                                      "nor an outputs topic")
    # Triggers are always read as responses and only their presence matters.
    triggers = tuple(
        SourceNode(topic=t, pipeline=p, chain=ChainType.OUTPUT_INPUT, tensors=frozenset(ts), tensor_order=tuple(ts))
        for t, p, ts in trigger_groups
    )
    window = (update.joinWindowMs if update.HasField("joinWindowMs") and update.joinWindowMs
              else settings.default_join_window_ms)

    batch = BatchSpec()
    if update.HasField("batch"):
        b = update.batch
        batch = BatchSpec(size=b.size if b.HasField("size") else 0,
                          window_ms=b.windowMs if b.HasField("windowMs") else 0, rolling=b.rolling)
        if batch.enabled and (len(sources) > 1 or not topic_suffix(sink) == "inputs"
                              or sources[0].chain is ChainType.PASSTHROUGH):
            log.warning("pipeline %s step %s: batch settings ignored (only single-source steps feeding an "
                        "inputs topic are batched)", msg.pipeline, sink)
            batch = BatchSpec()
        if batch.rolling and not batch.size:
            raise TopologyError(sink, "batch.rolling needs batch.size")
        if not settings.enable_batching:
            batch = BatchSpec()
    return StepNode(
        name=name, kind=kind, sink=sink, sink_pipeline=update.sink.pipelineName or msg.pipeline,
        sources=sources, triggers=triggers, join=join, triggers_join=triggers_join,
        window_ms=int(window), batch=batch,
        pass_empty=bool(update.passEmptyResponses and settings.honour_pass_empty_responses),
    )
