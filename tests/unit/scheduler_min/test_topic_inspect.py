"""Inspect topic selection (as ``seldon pipeline inspect``) and value rendering, without Kafka."""
import json

import numpy as np
import pytest

from chainer_api import scheduler_pb2
from dataflow import oip
from scheduler_min import topic_inspect as ti


def status(*steps):
    r = scheduler_pb2.PipelineStatusResponse(pipelineName="p")
    v = r.versions.add()
    for s in steps:
        v.pipeline.steps.add(name=s)
    return r


@pytest.mark.parametrize("expr,topics,tensor", [
    ("p", ["seldon.default.model.a.inputs", "seldon.default.model.a.outputs", "seldon.default.model.b.inputs",
           "seldon.default.model.b.outputs", "seldon.default.pipeline.p.inputs", "seldon.default.pipeline.p.outputs",
           "seldon.default.errors.errors"], ""),
    ("p.inputs", ["seldon.default.pipeline.p.inputs"], ""),
    ("p.outputs", ["seldon.default.pipeline.p.outputs"], ""),
    ("p.a", ["seldon.default.model.a.inputs", "seldon.default.model.a.outputs"], ""),
    ("p.b.outputs", ["seldon.default.model.b.outputs"], ""),
    ("p.b.outputs.OUT0", ["seldon.default.model.b.outputs"], "OUT0"),
])
def test_select_topics(expr, topics, tensor):
    t = ti.select_topics(expr, status("a", "b"), "default", "seldon")
    assert (t.pipeline, t.topics, t.tensor) == ("p", topics, tensor)


@pytest.mark.parametrize("expr,msg", [
    ("p.zz", "Failed to find step with name zz in pipeline p"),
    ("p.zz.inputs", "Failed to find step with name zz in pipeline p"),
    ("p.a.sideways", "Need to specify either inputs or outputs for a step"),
    ("p.a.inputs.t.x", "Bad pipeline specifier p.a.inputs.t.x"),
])
def test_select_topics_errors(expr, msg):
    with pytest.raises(ti.InspectError) as info:
        ti.select_topics(expr, status("a"), "default", "seldon")
    assert str(info.value) == msg


def test_namespace_and_prefix():
    t = ti.select_topics("p.inputs", status("a"), "prod", "acme")
    assert t.topics == ["acme.prod.pipeline.p.inputs"]


def test_render_response_expands_raw_contents_and_selects_tensor():
    resp = oip.to_raw(oip.make_response({"OUTPUT0": np.array([[1, 2]], dtype=np.int32),
                                             "OUTPUT1": np.array([[0.5]], dtype=np.float32)}, id="r1"))
    data = resp.SerializeToString()
    text, is_json = ti.render_value("seldon.default.model.m.outputs", data, "", False)
    doc = json.loads(text)
    assert is_json and doc["id"] == "r1"
    assert doc["outputs"][0]["contents"]["intContents"] == [1, 2]
    assert doc["outputs"][0]["shape"] == ["1", "2"]
    assert "rawOutputContents" not in doc
    text, _ = ti.render_value("seldon.default.model.m.outputs", data, "OUTPUT1", False)
    assert json.loads(text)["contents"]["fp32Contents"] == [0.5]
    text, _ = ti.render_value("seldon.default.model.m.outputs", data, "", True)
    assert "contents" not in json.loads(text)["outputs"][0]


def test_render_request_and_error_text():
    req = oip.make_request({"INPUT": np.array([[1.0, 2.0]])}, id="q")
    text, is_json = ti.render_value("seldon.default.pipeline.p.inputs", req.SerializeToString(), "", False)
    assert is_json and json.loads(text)["inputs"][0]["name"] == "INPUT"
    assert ti.render_value("seldon.default.errors.errors", b"model m failed: boom", "", False) == (
        "model m failed: boom", False)


def test_formats():
    topics = [ti.InspectTopic("t1", [ti.InspectMessage("k1", '{"a":1}', True, [("pipeline", "p"), ("x", "1"),
                                                                               ("x", "2")])]),
              ti.InspectTopic("t2")]
    assert ti.format_raw(topics, False) == "Topic: t1\nk1\t{\"a\":1}\n----------------\nTopic: t2\n----------------\n"
    assert ti.format_raw(topics, True).splitlines()[1] == 'k1\t{"a":1}\t\tpipeline=[p]\tx=[1 2]'
    assert json.loads(ti.format_json(topics)) == {"topics": [
        {"name": "t1", "msgs": [{"headers": {"pipeline": ["p"], "x": ["1", "2"]}, "key": "k1", "value": {"a": 1}}]},
        {"name": "t2", "msgs": None}]}


def test_consumer_config_line():
    conf = ti.consumer_config("127.0.0.1:9092")
    assert conf["group.id"].startswith("seldon-cli-") and conf["auto.offset.reset"] == "earliest"
    line = ti.describe_config(conf)
    assert line.startswith("Using consumer config map[auto.offset.reset:earliest bootstrap.servers:127.0.0.1:9092 ")


def test_absent_tensor_renders_as_null_or_empty():
    resp = oip.make_response({"OUTPUT0": np.array([[1]], dtype=np.int32)})
    assert ti.render_value("seldon.default.model.m.outputs", resp.SerializeToString(), "NOPE", False) == (None, False)
    topics = [ti.InspectTopic("t", [ti.InspectMessage("k", None, False)])]
    assert ti.format_raw(topics, False).splitlines()[1] == "k\t"
    assert json.loads(ti.format_json(topics))["topics"][0]["msgs"][0]["value"] is None
