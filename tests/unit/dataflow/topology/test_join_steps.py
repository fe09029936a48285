"""Join, trigger and cycle steps through the in-memory driver."""
from __future__ import annotations

import numpy as np

from dataflow import oip
from dataflow.headers import PIPELINE_ERRORS
from dataflow.topology.builders import create_message, step_update
from dataflow_testing.driver import PipelineTestDriver
from scheduler_min.convert import pipeline_message

NS = "seldon.default"
V = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)


def add10(req):
    return oip.make_response({"OUTPUT": oip.request_arrays(req)["INPUT"] + 10}, id=req.id)


def mul10(req):
    return oip.make_response({"OUTPUT": oip.request_arrays(req)["INPUT"] * 10}, id=req.id)


def identity(name):
    def model(req):
        return oip.make_response({f"{name}": a for a in oip.request_arrays(req).values()}, id=req.id)
    return model


def outputs(record):
    return oip.parse_response(record.value)


def join_pipeline(join="inner", window=None, steps=("mul10", "add10")):
    out = {"steps": list(steps), "stepsJoin": join}
    if window:
        out["joinWindowMs"] = window
    d = PipelineTestDriver(pipeline_message({
        "name": "p", "steps": [{"name": s, "inputs": ["p.inputs.INPUT"]} for s in steps], "output": out}))
    d.model("mul10", mul10)
    d.model("add10", add10)
    return d


def test_two_way_inner_join_merges_in_output_steps_order():
    d = join_pipeline()
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="0.p.r1", timestamp=5)
    [out] = d.read(d.outputs_topic)
    resp = outputs(out)
    assert [t.name for t in resp.outputs] == ["OUTPUT", "OUTPUT"]        # duplicates kept
    arrays = oip.response_tensors(resp)
    np.testing.assert_allclose(arrays[0][1], V * 10)                       # mul10 first (output.steps order)
    np.testing.assert_allclose(arrays[1][1], V + 10)
    assert out.headers[-2:] == [("pipeline", b"p"), ("x-pipeline-version", b"1")]


def test_join_result_timestamp_is_the_max_of_its_inputs():
    d = PipelineTestDriver(create_message("p", [step_update(
        f"{NS}.pipeline.p.outputs", [(f"{NS}.model.a.outputs", "p"), (f"{NS}.model.b.outputs", "p")], pipeline="p")]))
    d.pipe(f"{NS}.model.a.outputs", oip.make_response({"A": V}), key="k", timestamp=40)
    d.pipe(f"{NS}.model.b.outputs", oip.make_response({"B": V}), key="k", timestamp=25,
           headers=[("pipeline", b"p"), ("x-last", b"b")])
    [out] = d.read(d.outputs_topic)
    assert out.timestamp == 40
    assert [t.name for t in outputs(out).outputs] == ["A", "B"]
    assert out.headers[0] == ("x-last", b"b")                              # last-arriving branch


def test_three_way_inner_join_waits_for_all_branches():
    source = lambda m: f"{NS}.model.{m}.outputs"   # noqa: E731
    d = PipelineTestDriver(create_message("p", [step_update(
        f"{NS}.model.j.inputs", [(source("a"), "p"), (source("b"), "p"), (source("c"), "p")], pipeline="p")]))
    d.pipe(source("c"), oip.make_response({"C": V}), key="k")
    d.pipe(source("a"), oip.make_response({"A": V}), key="k")
    d.pipe(source("b"), oip.make_response({"B": V}), key="other")
    assert d.read(f"{NS}.model.j.inputs") == []
    d.pipe(source("b"), oip.make_response({"B": V}), key="k")
    [out] = d.read(f"{NS}.model.j.inputs")
    assert [t.name for t in oip.parse_request(out.value).inputs] == ["A", "B", "C"]   # source order


def test_inner_join_with_a_failed_branch_emits_nothing_but_the_error():
    d = join_pipeline()
    d.model("add10", lambda req: (_ for _ in ()).throw(RuntimeError("add10 down")))
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="k")
    [out] = d.read(d.outputs_topic)
    assert out.value == b"add10 down" and (PIPELINE_ERRORS, b"add10") in out.headers
    d.advance(120_000)
    assert d.read(d.outputs_topic) == []


def test_outer_join_answers_missing_branch_at_window_close_by_wall_clock():
    d = join_pipeline(join="outer", window=500)
    d.model("add10", lambda req: (_ for _ in ()).throw(RuntimeError("add10 down")))
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="k")
    d.read(d.outputs_topic)                                   # the error record
    d.advance(499)
    assert d.read(d.outputs_topic) == []
    d.advance(1)
    [out] = d.read(d.outputs_topic)
    resp = outputs(out)
    assert [t.name for t in resp.outputs] == ["OUTPUT"]
    np.testing.assert_allclose(oip.response_arrays(resp)["OUTPUT"], V * 10)
    d.advance(10_000)
    assert d.read(d.outputs_topic) == []                      # once


def test_outer_join_with_all_branches_emits_once_and_no_partial_later():
    d = join_pipeline(join="outer", window=500)
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="k")
    assert len(d.read(d.outputs_topic)) == 1
    d.advance(1000)
    assert d.read(d.outputs_topic) == []


def test_any_join_forwards_each_branch_without_a_merged_record():
    d = join_pipeline(join="any")
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="k")
    outs = d.read(d.outputs_topic)
    assert len(outs) == 2
    assert all(len(outputs(o).outputs) == 1 for o in outs)
    d.advance(120_000)
    assert d.read(d.outputs_topic) == []


def test_conditional_routing_with_any_output_join():
    def conditional(req):
        a = oip.request_arrays(req)
        if int(a["CHOICE"][0]) == 0:
            return oip.make_response({"OUTPUT0": a["INPUT0"]})
        return oip.make_response({"OUTPUT1": a["INPUT1"]})
    d = PipelineTestDriver(pipeline_message({
        "name": "tfsimple-conditional",
        "steps": [{"name": "conditional"},
                  {"name": "mul10", "inputs": ["conditional.outputs.OUTPUT0"],
                   "tensorMap": {"conditional.outputs.OUTPUT0": "INPUT"}},
                  {"name": "add10", "inputs": ["conditional.outputs.OUTPUT1"],
                   "tensorMap": {"conditional.outputs.OUTPUT1": "INPUT"}}],
        "output": {"steps": ["mul10", "add10"], "stepsJoin": "any"}}))
    for name, fn in (("conditional", conditional), ("mul10", mul10), ("add10", add10)):
        d.model(name, fn)
    d.pipe(d.inputs_topic, oip.make_request({"CHOICE": np.array([1], np.int32), "INPUT0": V, "INPUT1": V}), key="k")
    assert d.read(d.model_inputs("mul10")) == []             # empty selection dropped
    [out] = d.read(d.outputs_topic)
    np.testing.assert_allclose(oip.response_arrays(outputs(out))["OUTPUT"], V + 10)


def trigger_joins_pipeline():
    """samples/pipelines/trigger-joins.yaml: mul10 if ok1 or ok2 present, add10 if ok3 present."""
    d = PipelineTestDriver(pipeline_message({
        "name": "trigger-joins",
        "steps": [{"name": "mul10", "inputs": ["trigger-joins.inputs.INPUT"],
                   "triggers": ["trigger-joins.inputs.ok1", "trigger-joins.inputs.ok2"], "triggersJoinType": "any"},
                  {"name": "add10", "inputs": ["trigger-joins.inputs.INPUT"],
                   "triggers": ["trigger-joins.inputs.ok3"]}],
        "output": {"steps": ["mul10", "add10"], "stepsJoin": "any"}}))
    d.model("mul10", mul10)
    d.model("add10", add10)
    return d


def test_triggers_gate_steps_by_trigger_tensor_presence():
    d = trigger_joins_pipeline()
    ok = np.array([1], np.int32)
    d.pipe(d.inputs_topic, oip.make_request({"ok2": ok, "INPUT": V}), key="a")
    [out] = d.read(d.outputs_topic)
    np.testing.assert_allclose(oip.response_arrays(outputs(out))["OUTPUT"], V * 10)
    assert d.read(d.model_inputs("add10")) == []
    d.pipe(d.inputs_topic, oip.make_request({"ok3": ok, "INPUT": V}), key="b")
    [out] = d.read(d.outputs_topic)
    np.testing.assert_allclose(oip.response_arrays(outputs(out))["OUTPUT"], V + 10)
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="c")
    assert d.read(d.outputs_topic) == []
    assert d.stats().trigger_ignored == 4       # a: add10; b: mul10; c: both (ok1+ok2 is one trigger stream)


def test_triggers_combined_by_inner_join_need_every_trigger():
    sink, data, t1, t2 = (f"{NS}.model.m.inputs", f"{NS}.pipeline.p.inputs", f"{NS}.model.c1.outputs",
                          f"{NS}.model.c2.outputs")
    d = PipelineTestDriver(create_message("p", [step_update(
        sink, [(data, "p")], pipeline="p", triggers=[(t1, "p", "OK"), (t2, "p")], triggers_join="inner")]))
    d.pipe(data, oip.make_request({"INPUT": V}), key="k")
    d.pipe(t1, oip.make_response({"OK": V}), key="k")
    assert d.read(sink) == []
    d.pipe(t2, oip.make_response({"ANYTHING": V}), key="k")
    [out] = d.read(sink)
    assert [t.name for t in oip.parse_request(out.value).inputs] == ["INPUT"]   # data value kept
    d.pipe(t1, oip.make_response({"NOT_OK": V}), key="j")                        # wrong tensor: ignored
    d.pipe(t2, oip.make_response({"X": V}), key="j")
    d.pipe(data, oip.make_request({"INPUT": V}), key="j")
    assert d.read(sink) == []


def test_trigger_outside_the_window_does_not_fire():
    sink, data, trig = f"{NS}.model.m.inputs", f"{NS}.pipeline.p.inputs", f"{NS}.model.c.outputs"
    d = PipelineTestDriver(create_message("p", [step_update(
        sink, [(data, "p")], pipeline="p", triggers=[(trig, "p")], window_ms=100)]))
    d.pipe(data, oip.make_request({"INPUT": V}), key="k")
    d.advance(100)
    d.pipe(trig, oip.make_response({"OK": V}), key="k")
    assert d.read(sink) == []


def test_cycle_stops_after_max_step_revisits_with_the_reference_error_text():
    inc_in, inc_out = f"{NS}.model.inc.inputs", f"{NS}.model.inc.outputs"
    d = PipelineTestDriver(create_message("loop", [
        step_update(inc_in, [(f"{NS}.pipeline.loop.inputs", "loop")], pipeline="loop"),
        step_update(inc_in, [(inc_out, "loop")], pipeline="loop", tensor_map=[("loop", f"{inc_out}.OUTPUT", "INPUT")]),
        step_update(f"{NS}.pipeline.loop.outputs", [(f"{NS}.errors.errors", "loop")], pipeline="loop"),
    ], allow_cycles=True, max_step_revisits=2))
    calls = []

    def inc(req):
        calls.append(1)
        return oip.make_response({"OUTPUT": oip.request_arrays(req)["INPUT"] + 1})
    d.model("inc", inc)
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="0.loop.r1")
    assert len(calls) == 3                                # first visit + maxStepRevisits revisits
    [err] = d.read(d.errors_topic)
    text = ("ERROR: Max step revisits (2) exceeded for request 0.loop.r1 in topic "
            f"TopicForPipeline(topicName={inc_in}, pipelineName=loop)")
    assert err.value == text.encode()
    assert err.headers[-1] == (PIPELINE_ERRORS, b"loop")
    [out] = d.read(d.outputs_topic)
    assert out.value == text.encode() and (PIPELINE_ERRORS, b"loop") in out.headers
    assert d.stats().revisits_exceeded == 1
    # reaching the output topic cleared the counters: the same key may loop again
    calls.clear()
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="0.loop.r1")
    assert len(calls) == 3


def test_cycle_with_exit_clears_counters_on_output():
    """A loop that exits through the output step: each request gets its full revisit budget."""
    inc_in, inc_out = f"{NS}.model.inc.inputs", f"{NS}.model.inc.outputs"
    d = PipelineTestDriver(create_message("loop", [
        step_update(inc_in, [(f"{NS}.pipeline.loop.inputs", "loop")], pipeline="loop"),
        step_update(inc_in, [(inc_out, "loop", "AGAIN")], pipeline="loop",
                    tensor_map=[("loop", f"{inc_out}.AGAIN", "INPUT")]),
        step_update(f"{NS}.pipeline.loop.outputs", [(inc_out, "loop", "DONE")], pipeline="loop"),
        step_update(f"{NS}.pipeline.loop.outputs", [(f"{NS}.errors.errors", "loop")], pipeline="loop"),
    ], allow_cycles=True, max_step_revisits=5))

    def inc(req):
        x = oip.request_arrays(req)["INPUT"] + 1
        return oip.make_response({"DONE" if x[0] >= 4 else "AGAIN": x})
    d.model("inc", inc)
    for _ in range(3):
        d.pipe(d.inputs_topic, oip.make_request({"INPUT": np.array([0.0], np.float32)}), key="k")
        [out] = d.read(d.outputs_topic)
        np.testing.assert_allclose(oip.response_arrays(outputs(out))["DONE"], [4.0])
    assert d.read(d.errors_topic) == []
    assert len(d.stores[("loop", "visiting-counter-store")]) == 0


def test_join_mixing_a_steps_inputs_and_outputs_tensors():
    """samples/pipelines/tfsimples-input.yaml: INPUT_INPUT and OUTPUT_INPUT branches joined."""
    def tfsimple(req):
        a = oip.request_arrays(req)
        return oip.make_response({"OUTPUT0": a["INPUT0"] + a["INPUT1"], "OUTPUT1": a["INPUT0"] - a["INPUT1"]}, raw=True)
    d = PipelineTestDriver(pipeline_message({
        "name": "tfsimples-input",
        "steps": [{"name": "tfsimple1"},
                  {"name": "tfsimple2", "inputs": ["tfsimple1.inputs.INPUT0", "tfsimple1.outputs.OUTPUT1"],
                   "tensorMap": {"tfsimple1.outputs.OUTPUT1": "INPUT1"}}],
        "output": {"steps": ["tfsimple2"]}}))
    d.model("tfsimple1", tfsimple)
    d.model("tfsimple2", tfsimple)
    x = np.arange(16, dtype=np.int32).reshape(1, 16)
    y = np.ones((1, 16), np.int32)
    d.pipe(d.inputs_topic, oip.make_request({"INPUT0": x, "INPUT1": y}), key="k")
    [m2_in] = d.read(d.model_inputs("tfsimple2"))
    req = oip.parse_request(m2_in.value)
    assert [t.name for t in req.inputs] == ["INPUT0", "INPUT1"]
    arrays = oip.request_arrays(req)
    np.testing.assert_array_equal(arrays["INPUT0"], x)          # typed branch converted to raw to merge
    np.testing.assert_array_equal(arrays["INPUT1"], x - y)
    [out] = d.read(d.outputs_topic)
    np.testing.assert_array_equal(oip.response_arrays(outputs(out))["OUTPUT0"], 2 * x - y)


def test_cycle_counters_of_requests_that_never_finish_expire():
    from dataflow.topology import TopologySettings
    inc_in = f"{NS}.model.inc.inputs"
    msg = create_message("loop", [
        step_update(inc_in, [(f"{NS}.pipeline.loop.inputs", "loop")], pipeline="loop"),
        step_update(f"{NS}.pipeline.loop.outputs", [(f"{NS}.errors.errors", "loop")], pipeline="loop"),
    ], allow_cycles=True, max_step_revisits=1)
    d = PipelineTestDriver(msg, settings=TopologySettings(cycle_counter_ttl_ms=1000))
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="k")    # no model: never reaches output
    counters = d.stores[("loop", "visiting-counter-store")]
    assert len(counters) == 1
    d.advance(999)
    assert len(counters) == 1
    d.advance(1)
    assert len(counters) == 0
