"""Single-source steps through the in-memory driver: chain types, selection, renaming,
raw alignment, empty drop, header filter and rewrite, timestamps, pipeline-to-pipeline inputs and
the error path."""
from __future__ import annotations

import numpy as np
import pytest

from dataflow import oip
from dataflow.headers import PIPELINE_ERRORS
from dataflow.topology.builders import create_message, step_update
from dataflow_testing.driver import PipelineTestDriver
from scheduler_min.convert import pipeline_message

NS = "seldon.default"
X = np.arange(4, dtype=np.int32).reshape(1, 4)
Y = np.full((1, 4), 10, dtype=np.int32)


def tfsimple(req):
    a = oip.request_arrays(req)
    return oip.make_response({"OUTPUT0": a["INPUT0"] + a["INPUT1"], "OUTPUT1": a["INPUT0"] - a["INPUT1"]},
                               raw=True, id=req.id, model_name="tfsimple", model_version="1")


def request(**tensors):
    return oip.make_request(tensors or {"INPUT0": X, "INPUT1": Y}, id="rid", parameters={"p": "v"})


def outputs_of(record):
    return oip.response_arrays(oip.parse_response(record.value))


def inputs_of(record):
    return oip.request_arrays(oip.parse_request(record.value))


def tfsimples():
    d = PipelineTestDriver(pipeline_message({
        "name": "tfsimples",
        "steps": [{"name": "tfsimple1"},
                  {"name": "tfsimple2", "inputs": ["tfsimple1"],
                   "tensorMap": {"tfsimple1.outputs.OUTPUT0": "INPUT0", "tfsimple1.outputs.OUTPUT1": "INPUT1"}}],
        "output": {"steps": ["tfsimple2"]}}, version=2), start_ms=1000)
    d.model("tfsimple1", tfsimple)
    d.model("tfsimple2", tfsimple)
    return d


def test_chain_end_to_end_with_renames():
    d = tfsimples()
    d.pipe(d.inputs_topic, request(), key="0.tfsimples.r1")
    [m1_in] = d.read(d.model_inputs("tfsimple1"))
    req = oip.parse_request(m1_in.value)
    # INPUT_INPUT keeps only id, parameters and tensors (model_name/version/outputs dropped)
    assert req.id == "rid" and req.parameters["p"].string_param == "v" and req.model_name == ""
    [m2_in] = d.read(d.model_inputs("tfsimple2"))
    np.testing.assert_array_equal(inputs_of(m2_in)["INPUT0"], X + Y)   # OUTPUT0 renamed to INPUT0
    np.testing.assert_array_equal(inputs_of(m2_in)["INPUT1"], X - Y)
    [out] = d.read(d.outputs_topic)
    assert out.key == "0.tfsimples.r1"
    resp = oip.parse_response(out.value)
    assert resp.model_name == "" and resp.id == "rid"          # OUTPUT_OUTPUT drops model_name
    np.testing.assert_array_equal(outputs_of(out)["OUTPUT0"], 2 * X)
    np.testing.assert_array_equal(outputs_of(out)["OUTPUT1"], 2 * Y)
    assert out.headers == [("pipeline", b"tfsimples"), ("x-pipeline-version", b"2")]


def test_header_filter_any_instance_and_rewrite_keeps_order_drops_alibi():
    d = tfsimples()
    d.pipe(d.inputs_topic, request(), key="k-other", headers=[("pipeline", b"other")])
    assert d.read(d.model_inputs("tfsimple1")) == []
    assert d.stats().filtered == 1
    headers = [("x-request-id", b"r1"), ("pipeline", b"other"), ("x-seldon-alibi-type", b"explain"),
               ("pipeline", b"tfsimples"), ("x-seldon-alibi-method", b"anchors"), ("x-pipeline-version", b"9"),
               ("traceparent", b"00-abc")]
    d.pipe(d.inputs_topic, request(), key="k1", headers=headers)
    [m1_in] = d.read(d.model_inputs("tfsimple1"))
    assert m1_in.headers == [("x-request-id", b"r1"), ("traceparent", b"00-abc"),
                             ("pipeline", b"tfsimples"), ("x-pipeline-version", b"2")]


def test_forwarded_records_keep_key_and_input_timestamp():
    d = tfsimples()
    d.pipe(d.inputs_topic, request(), key="3.tfsimples.abc", timestamp=777)
    [m1_in] = d.read(d.model_inputs("tfsimple1"))
    assert (m1_in.key, m1_in.timestamp) == ("3.tfsimples.abc", 777)
    [out] = d.read(d.outputs_topic)
    assert out.timestamp == 1000     # model outputs get the gateway's (driver clock) timestamp


def single(sink_ref, source, *, tensors=(), tensor_map=(), pass_empty=False, pipeline="p"):
    src = [(source, pipeline, t) for t in tensors] or [(source, pipeline)]
    return PipelineTestDriver(create_message(pipeline, [
        step_update(sink_ref, src, pipeline=pipeline, tensor_map=tensor_map, pass_empty=pass_empty)]))


@pytest.mark.parametrize("source_suffix, sink_suffix, parse_out", [
    ("inputs", "inputs", inputs_of), ("outputs", "inputs", inputs_of),
    ("outputs", "outputs", outputs_of), ("inputs", "outputs", outputs_of),
])
def test_four_chain_types_select_and_convert(source_suffix, sink_suffix, parse_out):
    source, sink = f"{NS}.model.a.{source_suffix}", f"{NS}.model.b.{sink_suffix}"
    d = single(sink, source, tensors=["T2"], tensor_map=[("p", f"{source}.T2", "R2")])
    make = oip.make_request if source_suffix == "inputs" else oip.make_response
    d.pipe(source, make({"T1": X, "T2": Y, "T3": X}, id="i"), key="k")
    [rec] = d.read(sink)
    arrays = parse_out(rec)
    assert list(arrays) == ["R2"]
    np.testing.assert_array_equal(arrays["R2"], Y)


def test_tensor_subset_of_pipeline_inputs():
    d = PipelineTestDriver(pipeline_message({"name": "p", "steps": [{"name": "m", "inputs": ["p.inputs.INPUT1"]}]}))
    d.pipe(d.inputs_topic, request(), key="k")
    [rec] = d.read(d.model_inputs("m"))
    assert list(inputs_of(rec)) == ["INPUT1"]


def test_tensors_override_plain_topic_end_to_end():
    d = PipelineTestDriver(pipeline_message(
        {"name": "p", "steps": [{"name": "m1"}, {"name": "m2", "inputs": ["m1", "m1.outputs.OUTPUT1"]}]}))
    d.model("m1", tfsimple)
    d.pipe(d.inputs_topic, request(), key="k")
    [rec] = d.read(d.model_inputs("m2"))
    assert list(inputs_of(rec)) == ["OUTPUT1"]


def test_raw_contents_stay_aligned_with_kept_tensors():
    source, sink = f"{NS}.model.a.outputs", f"{NS}.model.b.inputs"
    d = single(sink, source, tensors=["B"])
    resp = oip.make_response({"A": X, "B": Y, "C": X + 1}, raw=True)
    d.pipe(source, resp, key="k")
    [rec] = d.read(sink)
    req = oip.parse_request(rec.value)
    assert [t.name for t in req.inputs] == ["B"]
    assert list(req.raw_input_contents) == [resp.raw_output_contents[1]]
    assert not req.inputs[0].HasField("contents")


def test_empty_results_are_dropped_and_counted():
    source, sink = f"{NS}.model.a.outputs", f"{NS}.model.b.inputs"
    d = single(sink, source, tensors=["MISSING"])
    d.pipe(source, oip.make_response({"A": X}), key="k")
    assert d.read(sink) == []
    assert d.stats().empty_dropped == 1


def test_pass_empty_responses_forwards_the_empty_message():
    source, sink = f"{NS}.model.a.outputs", f"{NS}.model.b.inputs"
    d = single(sink, source, tensors=["MISSING"], pass_empty=True)
    d.pipe(source, oip.make_response({"A": X}, id="i7"), key="k")
    [rec] = d.read(sink)
    req = oip.parse_request(rec.value)
    assert req.id == "i7" and len(req.inputs) == 0


def test_malformed_values_become_error_records_for_their_key_and_do_not_stop_the_step(caplog):
    """The caller waiting on the key gets the error at once (through the error step), not a timeout."""
    d = tfsimples()
    d.pipe(d.inputs_topic, b"\xff\xff\xff not protobuf", key="0.tfsimples.bad",
           headers=[("pipeline", b"tfsimples"), ("x-request-id", b"bad")])
    assert "undecodable record" in caplog.text and "tfsimples" in caplog.text
    assert d.stats().malformed == 1
    [err] = d.read(d.errors_topic)
    assert err.key == "0.tfsimples.bad"
    assert err.value.startswith(b"ERROR: step tfsimple1 cannot decode the record from topic seldon.default.pipeline.")
    [out] = d.read(d.outputs_topic)
    assert out.key == "0.tfsimples.bad" and (PIPELINE_ERRORS, b"tfsimples") in out.headers
    assert (("x-request-id", b"bad")) in out.headers
    d.pipe(d.inputs_topic, request(), key="good", headers=[("pipeline", b"tfsimples")])
    assert [r.key for r in d.read(d.outputs_topic)] == ["good"]


def test_model_error_reaches_pipeline_output_through_error_step():
    d = tfsimples()

    def broken(req):
        raise RuntimeError("rpc error: code = InvalidArgument desc = bad shape")
    d.model("tfsimple2", broken)
    d.pipe(d.inputs_topic, request(), key="0.tfsimples.e1",
           headers=[("pipeline", b"tfsimples"), ("x-request-id", b"e1")])
    [err] = d.read(d.errors_topic)
    assert err.value == b"rpc error: code = InvalidArgument desc = bad shape"
    [out] = d.read(d.outputs_topic)
    assert out.key == "0.tfsimples.e1"
    assert out.value == err.value                 # PASSTHROUGH: bytes unchanged
    assert out.headers == [("x-request-id", b"e1"), (PIPELINE_ERRORS, b"tfsimple2"),
                           ("pipeline", b"tfsimples"), ("x-pipeline-version", b"2")]


def test_error_step_ignores_other_pipelines_errors():
    d = tfsimples()
    d.pipe(d.errors_topic, b"boom", key="k", headers=[("pipeline", b"someone-else"), (PIPELINE_ERRORS, b"m")])
    assert d.read(d.outputs_topic) == []


def test_pipeline_input_straight_to_output_converts_request_to_response():
    d = PipelineTestDriver(pipeline_message({"name": "echo", "steps": [{"name": "m"}], "output": {}}))
    d.pipe(d.inputs_topic, request(), key="k")
    [out] = d.read(d.outputs_topic)
    assert list(outputs_of(out)) == ["INPUT0", "INPUT1"]


def test_pipeline_to_pipeline_with_upstream_renames_and_step_topics():
    upstream = pipeline_message({"name": "tfsimple", "steps": [{"name": "tfsimple1"}],
                                 "output": {"steps": ["tfsimple1"]}})
    downstream = pipeline_message({
        "name": "tfsimple-extended",
        "input": {"externalInputs": ["tfsimple.outputs"],
                  "tensorMap": {"tfsimple.outputs.OUTPUT0": "INPUT0", "tfsimple.outputs.OUTPUT1": "INPUT1"}},
        "steps": [{"name": "tfsimple2"}], "output": {"steps": ["tfsimple2"]}})
    from_step = pipeline_message({
        "name": "tfsimple-extended-step",
        "input": {"externalInputs": ["tfsimple.step.tfsimple1.outputs"],
                  "tensorMap": {"tfsimple.step.tfsimple1.outputs.OUTPUT0": "INPUT0",
                                "tfsimple.step.tfsimple1.outputs.OUTPUT1": "INPUT1"}},
        "steps": [{"name": "tfsimple3"}], "output": {"steps": ["tfsimple3"]}})
    d = PipelineTestDriver([upstream, downstream, from_step])
    for m in ("tfsimple1", "tfsimple2", "tfsimple3"):
        d.model(m, tfsimple)
    d.pipe(d.inputs_topic, request(), key="0.tfsimple.r1")
    [up_out] = d.read(d.outputs_topic)
    np.testing.assert_array_equal(outputs_of(up_out)["OUTPUT0"], X + Y)
    for name in ("tfsimple-extended", "tfsimple-extended-step"):
        [inp] = d.read(f"{NS}.pipeline.{name}.inputs")
        assert inp.key == "0.tfsimple.r1"                  # key kept: downstream is asynchronous
        assert inp.headers[-2:] == [("pipeline", name.encode()), ("x-pipeline-version", b"1")]
        assert list(inputs_of(inp)) == ["INPUT0", "INPUT1"]
        [out] = d.read(f"{NS}.pipeline.{name}.outputs")
        np.testing.assert_array_equal(outputs_of(out)["OUTPUT0"], 2 * X)
