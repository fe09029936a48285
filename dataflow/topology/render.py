"""Readable renderings of a Topology: plain text for logs/CLI and a Mermaid flowchart for docs."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from dataflow.joins.types import JoinType

if TYPE_CHECKING:  # model.py imports this module to render a Topology
    from dataflow.topology.model import SourceNode, StepNode, Topology


def _step_line(step: StepNode) -> list[str]:
    head = f"step {step.name} ({step.kind.value}) -> {step.sink}"
    lines = [head]
    if step.is_join:
        window = "" if step.join is JoinType.ANY else f", window {step.window_ms} ms"
        lines.append(f"  join: {step.join.value}{window}")
    for s in step.sources:
        lines.append(f"  source {s.label()}")
    if step.triggers:
        combine = f"join {step.triggers_join.value}, " if len(step.triggers) > 1 else ""
        lines.append(f"  triggers: {combine}gate window {step.window_ms} ms")
        for t in step.triggers:
            tensors = f" tensors={list(t.tensor_order)}" if t.tensor_order else ""
            lines.append(f"  trigger {t.topic} [pipeline={t.pipeline}]{tensors}")
    if step.batch.enabled:
        lines.append(f"  batch: size={step.batch.size} window_ms={step.batch.window_ms} rolling={step.batch.rolling}")
    if step.pass_empty:
        lines.append("  passEmptyResponses: forwarded even when no tensor is selected")
    return lines


def describe(topology: Topology) -> str:
    t = topology
    cycles = f"allowed, maxStepRevisits={t.max_step_revisits}" if t.allow_cycles else "not allowed"
    lines = [
        f"pipeline {t.pipeline} version {t.version} uid {t.uid}",
        f"  output topic: {t.output_topic}",
        f"  error topic: {t.error_topic}",
        f"  cycles: {cycles}",
    ]
    for step in t.steps:
        lines.extend(_step_line(step))
    return "\n".join(lines) + "\n"


def _node_id(prefix: str, text: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9_]", "_", text)


def _text(text: str) -> str:
    """A quoted Mermaid label: any character but the quote itself is literal inside quotes."""
    return '"' + text.replace('"', "#quot;") + '"'


def mermaid(topology: Topology) -> str:
    """``flowchart LR``: topics are rounded nodes, steps are boxes; edge labels carry tensors/joins.

    Labels are quoted (``-->|"..."|``) so tensor names with brackets, pipes or dots cannot break
    the chart in GitHub or any Mermaid viewer."""
    lines = ["flowchart LR"]
    topics: dict[str, str] = {}

    def topic(name: str) -> str:
        if name not in topics:
            topics[name] = _node_id("t_", name)
            lines.append(f"  {topics[name]}([{_text(name)}])")
        return topics[name]

    for step in topology.steps:
        sid = _node_id("s_", step.name)
        label = step.name
        if step.is_join:
            label += f"<br/>{step.join.value} join" + ("" if step.join is JoinType.ANY else f" {step.window_ms}ms")
        if step.batch.enabled:
            label += f"<br/>batch size={step.batch.size} window={step.batch.window_ms}ms" + \
                (" rolling" if step.batch.rolling else "")
        lines.append(f"  {sid}[{_text(label)}]")
        for s in step.sources:
            edge = ",".join(s.tensor_order)
            if s.renames:
                edge += (" " if edge else "") + ",".join(f"{k}→{v}" for k, v in sorted(s.renames.items()))
            arrow = f"-->|{_text(edge)}|" if edge else "-->"
            lines.append(f"  {topic(s.topic)} {arrow} {sid}")
        for tr in step.triggers:
            edge = "trigger" + (" " + ",".join(tr.tensor_order) if tr.tensor_order else "")
            lines.append(f"  {topic(tr.topic)} -.->|{_text(edge)}| {sid}")
        lines.append(f"  {sid} --> {topic(step.sink)}")
    return "\n".join(lines) + "\n"


def _source_dict(s: SourceNode) -> dict[str, Any]:
    return {"topic": s.topic, "pipeline": s.pipeline, "chain": s.chain.value,
            "tensors": list(s.tensor_order), "renames": dict(sorted(s.renames.items()))}


def as_dict(topology: Topology) -> dict[str, Any]:
    """Every compiled field as plain JSON-able data (``dataflow pipeline describe --format json``):
    what ``describe()`` prints, in a shape scripts can read."""
    t = topology
    steps = []
    for step in t.steps:
        steps.append({
            "name": step.name, "kind": step.kind.value, "sink": step.sink, "sinkPipeline": step.sink_pipeline,
            "sources": [_source_dict(s) for s in step.sources],
            "join": step.join.value if step.is_join else None,
            "triggers": [_source_dict(s) for s in step.triggers],
            "triggersJoin": step.triggers_join.value if len(step.triggers) > 1 else None,
            "windowMs": step.window_ms if (step.is_join and step.join is not JoinType.ANY) or step.triggers else None,
            "batch": ({"size": step.batch.size, "windowMs": step.batch.window_ms, "rolling": step.batch.rolling}
                      if step.batch.enabled else None),
            "passEmptyResponses": step.pass_empty,
        })
    return {
        "pipeline": t.pipeline, "version": t.version, "uid": t.uid,
        "outputTopic": t.output_topic, "errorTopic": t.error_topic,
        "allowCycles": t.allow_cycles, "maxStepRevisits": t.max_step_revisits,
        "sourceTopics": sorted(t.source_topics), "sinkTopics": sorted(t.sink_topics),
        "steps": steps,
    }
