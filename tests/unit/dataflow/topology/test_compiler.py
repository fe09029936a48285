"""Compiling PipelineUpdateMessages: grouping, chain types, renames, joins, sort order, validation."""
from __future__ import annotations

import random

import pytest

from chainer_api import chainer_pb2
from dataflow.state import MemoryStore
from dataflow.topology import (
    ChainType,
    JoinType,
    StepKind,
    TopologyError,
    TopologySettings,
    build_topology,
    compile_pipeline,
)
from dataflow.topology.builders import create_message, step_update
from scheduler_min.convert import pipeline_message

NS = "seldon.default"
IN = f"{NS}.pipeline.tfsimples.inputs"
OUT = f"{NS}.pipeline.tfsimples.outputs"
ERR = f"{NS}.errors.errors"
M1_IN, M1_OUT = f"{NS}.model.tfsimple1.inputs", f"{NS}.model.tfsimple1.outputs"
M2_IN, M2_OUT = f"{NS}.model.tfsimple2.inputs", f"{NS}.model.tfsimple2.outputs"


def tfsimples_message() -> chainer_pb2.PipelineUpdateMessage:
    """The scheduler's message for the ``tfsimples`` sample pipeline, field by field (updates in arbitrary order)."""
    updates = [
        step_update(M2_IN, [(M1_OUT, "tfsimples")], pipeline="tfsimples",
                    tensor_map=[("tfsimples", f"{M1_OUT}.OUTPUT0", "INPUT0"),
                                ("tfsimples", f"{M1_OUT}.OUTPUT1", "INPUT1")],
                    join="inner", triggers_join="inner"),
        step_update(OUT, [(ERR, "tfsimples")], pipeline="tfsimples", join="inner"),
        step_update(M1_IN, [(IN, "tfsimples")], pipeline="tfsimples", join="inner", triggers_join="inner"),
        step_update(OUT, [(M2_OUT, "tfsimples")], pipeline="tfsimples", join="inner", window_ms=0),
    ]
    updates[3].triggersJoinTy = chainer_pb2.PipelineStepUpdate.Unknown
    return create_message("tfsimples", updates, version=3, uid="cifcrqvp7gqs73c1s0ug")


def test_worked_example_tfsimples_compiles():
    topo = build_topology(tfsimples_message())
    assert [s.name for s in topo.steps] == ["tfsimple1", "tfsimple2", "error", "output"]
    m1, m2, err, out = topo.steps
    assert (m1.kind, m2.kind, err.kind, out.kind) == (StepKind.MODEL, StepKind.MODEL, StepKind.ERROR, StepKind.OUTPUT)
    assert m1.sources[0].chain is ChainType.INPUT_INPUT
    assert m2.sources[0].chain is ChainType.OUTPUT_INPUT
    assert dict(m2.sources[0].renames) == {"OUTPUT0": "INPUT0", "OUTPUT1": "INPUT1"}
    assert err.sources[0].chain is ChainType.PASSTHROUGH
    assert out.sources[0].chain is ChainType.OUTPUT_OUTPUT
    assert out.window_ms == 60_000          # joinWindowMs 0 -> default
    assert all(s.join is JoinType.INNER for s in topo.steps)
    assert topo.source_topics == {IN, M1_OUT, M2_OUT, ERR}
    assert topo.all_topics == {IN, OUT, ERR, M1_IN, M1_OUT, M2_IN, M2_OUT}


def test_worked_example_describe_and_mermaid():
    pipeline = compile_pipeline(tfsimples_message(), store_factory=MemoryStore)
    text = pipeline.describe()
    assert text.splitlines()[0] == "pipeline tfsimples version 3 uid cifcrqvp7gqs73c1s0ug"
    assert f"step tfsimple1 (model) -> {M1_IN}" in text
    assert (f"  source {M1_OUT} [pipeline=tfsimples] OUTPUT_INPUT "
            "renames={'OUTPUT0': 'INPUT0', 'OUTPUT1': 'INPUT1'}") in text
    assert f"step error (error) -> {OUT}" in text
    assert f"  source {ERR} [pipeline=tfsimples] PASSTHROUGH" in text
    chart = pipeline.mermaid()
    assert chart.startswith("flowchart LR\n")
    assert 's_tfsimple2["tfsimple2"]' in chart
    assert 't_seldon_default_model_tfsimple1_outputs -->|"OUTPUT0→INPUT0,OUTPUT1→INPUT1"| s_tfsimple2' in chart
    assert "s_output --> t_seldon_default_pipeline_tfsimples_outputs" in chart


def test_builder_matches_worked_example():
    spec = {"name": "tfsimples",
            "steps": [{"name": "tfsimple1"},
                      {"name": "tfsimple2", "inputs": ["tfsimple1"],
                       "tensorMap": {"tfsimple1.outputs.OUTPUT0": "INPUT0", "tfsimple1.outputs.OUTPUT1": "INPUT1"}}],
            "output": {"steps": ["tfsimple2"]}}
    built = build_topology(pipeline_message(spec, version=3, uid="cifcrqvp7gqs73c1s0ug"))
    assert built == build_topology(tfsimples_message())


def test_step_order_is_independent_of_message_order():
    msg = tfsimples_message()
    expected = build_topology(msg)
    for seed in range(5):
        updates = list(msg.updates)
        random.Random(seed).shuffle(updates)
        shuffled = create_message("tfsimples", updates, version=3, uid=msg.uid)
        assert build_topology(shuffled) == expected


def test_tensors_override_plain_topic_and_group_by_topic_and_pipeline():
    msg = create_message("p", [step_update(
        f"{NS}.model.m3.inputs",
        [(f"{NS}.model.m1.outputs", "p"), (f"{NS}.model.m1.outputs", "p", "OUTPUT0"),
         (f"{NS}.pipeline.p.inputs", "p", "A"), (f"{NS}.pipeline.p.inputs", "p", "B"),
         (f"{NS}.model.m1.outputs", "q")],
        pipeline="p")])
    [step] = build_topology(msg).steps
    assert [(s.topic, s.pipeline, s.tensor_order) for s in step.sources] == [
        (f"{NS}.model.m1.outputs", "p", ("OUTPUT0",)),
        (f"{NS}.pipeline.p.inputs", "p", ("A", "B")),
        (f"{NS}.model.m1.outputs", "q", ()),
    ]
    assert step.is_join


def test_renames_only_from_entries_of_the_sources_pipeline():
    src = f"{NS}.pipeline.up.outputs"
    msg = create_message("down", [step_update(
        f"{NS}.pipeline.down.inputs", [(src, "up")], pipeline="down",
        tensor_map=[("up", f"{src}.OUTPUT0", "INPUT0"), ("down", f"{src}.OUTPUT1", "INPUT1"),
                    ("up", f"{NS}.model.other.outputs.X", "Y")])])
    [step] = build_topology(msg).steps
    assert step.kind is StepKind.INPUT
    assert dict(step.sources[0].renames) == {"OUTPUT0": "INPUT0"}
    assert step.sources[0].chain is ChainType.OUTPUT_INPUT


def test_join_types_windows_and_batch():
    a, b = f"{NS}.model.a.outputs", f"{NS}.model.b.outputs"
    msg = create_message("p", [
        step_update(f"{NS}.model.c.inputs", [(a, "p"), (b, "p")], pipeline="p", join="outer", window_ms=250),
        step_update(f"{NS}.model.d.inputs", [(a, "p"), (b, "p")], pipeline="p", join=0, batch_size=3),
        step_update(f"{NS}.model.e.inputs", [(a, "p")], pipeline="p", join="any", batch_size=3, batch_window_ms=50),
    ])
    c, d, e = build_topology(msg, TopologySettings(default_join_window_ms=1234)).steps
    assert (c.join, c.window_ms) == (JoinType.OUTER, 250)
    assert (d.join, d.window_ms) == (JoinType.INNER, 1234)
    assert not d.batch.enabled                       # batching never applies to joins
    assert (e.batch.size, e.batch.window_ms) == (3, 50)


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: m.updates[0].ClearField("sources"), "no sources"),
    (lambda m: setattr(m.updates[0], "inputJoinTy", 7), "unknown inputJoinTy value 7"),
    (lambda m: setattr(m.updates[0], "triggersJoinTy", 9), "unknown triggersJoinTy value 9"),
    (lambda m: m.updates[0].sources.add(pipelineName="p", topicName="seldon.default.errors.errors"),
     "Can't join custom data"),
    (lambda m: setattr(m.updates[0].sink, "topicName", "seldon.default.errors.errors"),
     "not a model or pipeline inputs/outputs topic"),
    (lambda m: setattr(m.updates[0].sources[0], "pipelineName", ""), "empty pipelineName"),
])
def test_invalid_steps_name_the_step_and_the_reason(mutate, reason):
    msg = create_message("p", [step_update(f"{NS}.model.m.inputs", [(f"{NS}.pipeline.p.inputs", "p")], pipeline="p")])
    mutate(msg)
    with pytest.raises(TopologyError) as err:
        build_topology(msg)
    assert reason in str(err.value)
    assert err.value.step in ("", msg.updates[0].sink.topicName)
    if reason != "not a model or pipeline inputs/outputs topic":
        assert err.value.step == f"{NS}.model.m.inputs"


def test_message_without_steps_or_name_is_rejected():
    with pytest.raises(TopologyError, match="no steps"):
        build_topology(create_message("p", []))
    with pytest.raises(TopologyError, match="no pipeline name"):
        build_topology(chainer_pb2.PipelineUpdateMessage())


def test_pipeline_message_external_inputs_and_step_references():
    msg = pipeline_message({
        "name": "ext", "input": {"externalInputs": ["tfsimple.step.tfsimple1.outputs.OUTPUT0", "other"],
                                  "tensorMap": {"tfsimple.step.tfsimple1.outputs.OUTPUT0": "INPUT0",
                                                "other.outputs.OUTPUT1": "INPUT1"}},
        "steps": [{"name": "tfsimple2"}], "output": {"steps": ["tfsimple2"]}})
    topo = build_topology(msg)
    inp = next(s for s in topo.steps if s.kind is StepKind.INPUT)
    assert [(s.topic, s.pipeline, s.tensor_order) for s in inp.sources] == [
        (f"{NS}.model.tfsimple1.outputs", "tfsimple", ("OUTPUT0",)),
        (f"{NS}.pipeline.other.outputs", "other", ()),
    ]
    assert dict(inp.sources[0].renames) == {"OUTPUT0": "INPUT0"}
    assert dict(inp.sources[1].renames) == {"OUTPUT1": "INPUT1"}
