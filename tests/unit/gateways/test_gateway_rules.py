"""Pure gateway rules: routing headers, keys, header passing, error shapes, parsing, offsets."""
from __future__ import annotations

import re

import grpc
import pytest
from confluent_kafka import TopicPartition
from tritonclient.grpc import service_pb2 as pb

from chainer_api import scheduler_pb2
from dataflow import headers as H
from gateways import routing, scheduler_watch
from gateways.model_gateway import (
    OffsetTracker,
    error_headers,
    outgoing_metadata,
    output_headers,
    parse_model_input,
    strip_schema_prefix,
)
from gateways.oip_client import go_code_name, grpc_error_text
from gateways.routing import Resource, RoutingError


@pytest.mark.parametrize("value,expected", [
    ("tfsimples.pipeline", Resource("tfsimples", False)),
    ("tfsimple1.model", Resource("tfsimple1", True)),
    ("tfsimple1", Resource("tfsimple1", True)),
])
def test_resource_from_header(value, expected):
    assert routing.resource_from_header(value) == expected


@pytest.mark.parametrize("value", ["", None, "a.b", "a.b.c", ".pipeline"])
def test_bad_routing_header(value):
    with pytest.raises(RoutingError, match="Bad or missing header seldon-model"):
        routing.resource_from_header(value)


def test_internal_header_wins_last_value_and_path_fallback():
    assert routing.resource_from_values(["x.pipeline", "y.pipeline"], ["z"]) == Resource("y", False)
    assert routing.resource_from_values([], ["z.pipeline"]) == Resource("z", False)
    assert routing.resource_from_values([], [], "p") == Resource("p", False)
    with pytest.raises(RoutingError):
        routing.resource_from_values([], [])


def test_composite_key_and_topics():
    from dataflow.kafka import TopicNamer, partition_for_key

    key = routing.composite_key(3, "tfsimples", "abc")
    assert key == "3.tfsimples.abc"
    assert partition_for_key(key, 4) == 3
    namer = TopicNamer()
    assert Resource("p", False).input_topic(namer) == "seldon.default.pipeline.p.inputs"
    assert Resource("m", True).output_topic(namer) == "seldon.default.model.m.outputs"


def test_request_ids_look_like_xids():
    ids = {routing.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-v]{20}", i) for i in ids)


def test_request_headers_lowercase_x_only_and_request_id_once():
    caller = routing.caller_headers([("X-Foo", "1"), ("Content-Type", "json"), ("x-request-id", "given")])
    assert caller == [("x-foo", b"1"), ("x-request-id", b"given")]
    hdrs = routing.request_headers(caller, Resource("p", False), "other")
    assert hdrs == [("x-foo", b"1"), ("x-request-id", b"given"), ("pipeline", b"p")]
    hdrs = routing.request_headers([], Resource("m", True), "rid")
    assert hdrs == [("pipeline", b"m"), ("x-request-id", b"rid")]


def test_error_message_and_grpc_metadata():
    headers = [("pipeline", b"p"), ("x-request-id", b"r"), (H.PIPELINE_ERRORS, b"tfsimple1")]
    assert routing.error_message(headers, b"rpc error: code = InvalidArgument desc = x") == \
        "tfsimple1 : rpc error: code = InvalidArgument desc = x"
    assert routing.error_message(headers[:2], b"ok") is None
    md = routing.grpc_response_metadata(headers + [("x-pipeline-version", b"1")], "0.p.r")
    assert md == [("x-pipeline-version", "1"), ("x-request-id", "0.p.r")]


@pytest.mark.parametrize("code,name", [
    (grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument"), (grpc.StatusCode.NOT_FOUND, "NotFound"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "DeadlineExceeded"), (grpc.StatusCode.CANCELLED, "Canceled"),
    (grpc.StatusCode.UNAVAILABLE, "Unavailable"), (grpc.StatusCode.INTERNAL, "Internal"),
])
def test_go_error_text(code, name):
    assert go_code_name(code) == name
    assert grpc_error_text(code, "boom") == f"rpc error: code = {name} desc = boom"


def test_model_gateway_header_rules():
    headers = [("pipeline", b"p"), ("x-request-id", b"r"), ("x-seldon-route", b":a:"), ("X-Up", b"u")]
    assert outgoing_metadata(headers, "m") == [("x-request-id", "r"), ("x-up", "u"), ("seldon-model", "m")]
    out = output_headers(headers, [("x-request-id", b"other"), ("x-new", b"n")])
    assert out == headers + [("x-new", b"n")]
    assert error_headers(headers, "m")[-1] == (H.PIPELINE_ERRORS, b"m")


def test_parse_model_input_request_response_json_and_schema_prefix():
    req = pb.ModelInferRequest()
    req.inputs.add(name="a", datatype="INT32", shape=[1]).contents.int_contents.append(1)
    assert parse_model_input(req.SerializeToString()) == req
    assert parse_model_input(b"\x00\x00\x00\x00\x01\x00" + req.SerializeToString()) == req
    resp = pb.ModelInferResponse()
    resp.outputs.add(name="o", datatype="FP64", shape=[2]).contents.fp64_contents.extend([1.0, 2.0])
    resp.raw_output_contents.append(b"\x00" * 8)  # field 6 would not parse as requested outputs
    got = parse_model_input(resp.SerializeToString())
    assert got.inputs[0].name == "o"
    js = parse_model_input(b'{"outputs":[{"name":"o","datatype":"INT32","shape":[1],"data":[5]}]}')
    assert js.inputs[0].name == "o" and list(js.inputs[0].contents.int_contents) == [5]
    assert strip_schema_prefix(b"abc") == b"abc"


def test_offset_tracker_commits_only_below_the_oldest_inflight():
    t = OffsetTracker()
    for off in (10, 11, 12):
        t.start("t", 0, off)
    assert t.done("t", 0, 11) == 10  # 10 still in flight
    assert t.done("t", 0, 10) == 12
    assert t.done("t", 0, 12) == 13
    assert t.done("t", 0, 12) is None  # unknown / already done
    t.start("t", 1, 5)
    t.forget([TopicPartition("t", 1)])
    assert t.done("t", 1, 5) is None


def test_scheduler_events():
    ms = scheduler_pb2.ModelStatusResponse(modelName="m")
    v = ms.versions.add(version=2)
    v.state.state = scheduler_pb2.ModelStatus.ModelAvailable
    v.modelDefn.modelSpec.uri = "gs://bucket/x"
    v.modelDefn.modelSpec.parameters.add(name="endpoint", value="grpc://127.0.0.1:9500")
    ev = scheduler_watch.model_event(ms)
    assert ev == scheduler_watch.ModelEvent("m", True, "grpc://127.0.0.1:9500", 2)
    ms.deleted = True
    assert not scheduler_watch.model_event(ms).available

    ps = scheduler_pb2.PipelineStatusResponse(pipelineName="p")
    pv = ps.versions.add()
    pv.state.pipelineVersion = 3
    pv.state.status = scheduler_pb2.PipelineVersionState.PipelineReady
    assert scheduler_watch.pipeline_event(ps) == scheduler_watch.PipelineEvent("p", True, 3)
    pv.state.status = scheduler_pb2.PipelineVersionState.PipelineTerminated
    assert scheduler_watch.pipeline_event(ps).live is False
    pv.state.status = scheduler_pb2.PipelineVersionState.PipelineFailed
    assert scheduler_watch.pipeline_event(ps) is None


def test_infer_type_hint():
    from gateways.oip_client import InferError

    resp = pb.ModelInferResponse()
    resp.outputs.add(name="o", datatype="INT32", shape=[1]).contents.int_contents.append(3)
    got = parse_model_input(resp.SerializeToString(), "proto/InferModelResponse")
    assert got.inputs[0].name == "o"
    js = parse_model_input(b'{"inputs":[{"name":"i","datatype":"INT32","shape":[1],"data":[5]}]}',
                           "json/inferModelRequest")
    assert list(js.inputs[0].contents.int_contents) == [5]
    with pytest.raises(InferError, match="Header seldon-infer-type with unknown type nope"):
        parse_model_input(b"", "nope")


def test_a_name_without_a_routing_header_is_a_pipeline_unless_suffixed():
    assert routing.resource_from_name("p") == Resource("p", False)
    assert routing.resource_from_name("m.model") == Resource("m", True)
    assert routing.resource_from_name("p.pipeline") == Resource("p", False)
    assert routing.resource_from_values([], [], None, "q") == Resource("q", False)
    assert routing.resource_from_values([], ["q"], None, "p") == Resource("q", True)  # the header wins
    with pytest.raises(routing.RoutingError):
        routing.resource_from_name("a.b.c")


def test_non_ascii_caller_headers_are_refused():
    with pytest.raises(routing.BadHeader, match="header X-Note has a non-ASCII value"):
        routing.caller_headers([("X-Note", "caf\u00e9")])
    with pytest.raises(routing.BadHeader):
        routing.caller_headers([("x-raw", "\udce9")])  # undecodable bytes, as aiohttp hands them over
    assert routing.caller_headers([("Accept", "caf\u00e9")]) == []  # only x- headers travel
