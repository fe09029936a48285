"""The in-memory PipelineTestDriver itself: topics as lists, default headers, clock, fakes, guards."""
from __future__ import annotations

import numpy as np
import pytest

from dataflow import oip
from dataflow.headers import PIPELINE_ERRORS
from dataflow.runtime.base import RuntimeConfig
from dataflow.state import MemoryStore
from dataflow.topology import build_topology, compile_pipeline
from dataflow.topology.builders import create_message, step_update
from dataflow_testing.driver import DriverLoopError, PipelineTestDriver
from scheduler_min.convert import pipeline_message

V = np.array([1.0], np.float32)


def simple():
    return pipeline_message({"name": "p", "steps": [{"name": "m"}], "output": {"steps": ["m"]}})


def test_topic_names_default_key_and_headers_read_and_peek():
    d = PipelineTestDriver(simple(), start_ms=50)
    assert d.inputs_topic == "seldon.default.pipeline.p.inputs"
    assert d.outputs_topic == "seldon.default.pipeline.p.outputs"
    assert d.errors_topic == "seldon.default.errors.errors"
    piped = d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}))
    assert piped.key == "0.p.req-1" and piped.headers == [("pipeline", b"p")] and piped.timestamp == 50
    assert d.peek(d.inputs_topic) == [piped]
    assert d.read(d.inputs_topic) == [piped]
    assert d.read(d.inputs_topic) == []
    assert d.topics() == ["seldon.default.model.m.inputs"]       # no fake model: nothing further


def test_partition_follows_the_key_prefix():
    d = PipelineTestDriver(simple(), partitions=4)
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="3.p.x")
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="9.p.y")
    assert [r.partition for r in d.read(d.model_inputs("m"))] == [3, 3]


def test_fake_model_answers_and_errors_like_the_model_gateway():
    d = PipelineTestDriver(simple())
    d.model("m", lambda req: oip.make_response({"OUT": oip.request_arrays(req)["INPUT"] * 2}))
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="k")
    [out] = d.read(d.model_outputs("m"))
    assert out.key == "k" and out.headers[-2:] == [("pipeline", b"p"), ("x-pipeline-version", b"1")]

    def fail(req):
        raise ValueError("bad input")
    d.model("m", fail)
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}), key="k2")
    [err] = d.read(d.errors_topic)
    assert err.value == b"bad input" and err.headers[-1] == (PIPELINE_ERRORS, b"m")


def test_accepts_a_compiled_pipeline_and_runtime_config_settings():
    compiled = compile_pipeline(simple(), store_factory=MemoryStore, settings=RuntimeConfig(join_window_ms=7))
    d = PipelineTestDriver(compiled)
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}))
    assert len(d.read(d.model_inputs("m"))) == 1
    with pytest.raises(TypeError):
        PipelineTestDriver(object())


def test_unbounded_cycle_is_stopped_by_the_delivery_guard():
    ns = "seldon.default"
    loop = create_message("p", [
        step_update(f"{ns}.model.m.inputs", [(f"{ns}.pipeline.p.inputs", "p")], pipeline="p"),
        step_update(f"{ns}.model.m.inputs", [(f"{ns}.model.m.outputs", "p")], pipeline="p"),
    ])                                                   # cycles not guarded: allowCycles=false
    d = PipelineTestDriver(loop, max_deliveries=50)
    d.model("m", lambda req: oip.convert_to_response(req))
    with pytest.raises(DriverLoopError):
        d.pipe(d.inputs_topic, oip.make_request({"INPUT": V}))


def test_advance_returns_released_records():
    d = PipelineTestDriver(pipeline_message({"name": "p", "steps": [{"name": "a"}, {"name": "b"}],
                                             "output": {"steps": ["a", "b"], "stepsJoin": "outer",
                                                        "joinWindowMs": 10}}))
    d.pipe(d.model_outputs("a"), oip.make_response({"A": V}), key="k")
    assert d.advance(5) == []
    [released] = d.advance(5)
    assert released.topic == d.outputs_topic and released.key == "k"
    assert d.read(d.outputs_topic) == [released]
    assert build_topology(simple()).step("m").sink == d.model_inputs("m")


def test_advance_punctuates_at_each_deadline_on_the_way():
    """A batch window closing at t=200 releases at t=200 even when the clock jumps to t=1000."""
    d = PipelineTestDriver(pipeline_message({"name": "p",
                                             "steps": [{"name": "m", "batch": {"size": 10, "windowMs": 200}}]}))
    d.model("m", lambda req: oip.convert_to_response(req))
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": np.array([[1.0]], np.float32)}), key="k")
    d.advance(1000)
    [out] = d.read(d.model_outputs("m"))
    assert out.timestamp == 200                    # the fake model answered at the window close
    assert d.now_ms == 1000
    with pytest.raises(ValueError):
        d.advance(-1)
