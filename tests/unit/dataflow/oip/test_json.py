"""REST JSON <-> protobuf conversion, examples after the reference's v2_test.go facts."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from dataflow import oip
from dataflow.oip import json as oj
from dataflow.oip.datatypes import CONTENTS_FIELD
from dataflow.oip.tensors import join_bytes


def _req(body: dict) -> pb.ModelInferRequest:
    return oj.request_from_json(json.dumps(body))


@pytest.mark.parametrize("datatype,field", [
    ("UINT8", "uint_contents"), ("UINT16", "uint_contents"), ("UINT32", "uint_contents"),
    ("UINT64", "uint64_contents"), ("INT8", "int_contents"), ("INT16", "int_contents"),
    ("INT32", "int_contents"), ("INT64", "int64_contents"),
])
def test_integer_types_map_to_their_contents_field(datatype, field):
    r = _req({"inputs": [{"name": "input1", "datatype": datatype, "shape": [5], "data": [1, 2, 3, 4, 5]}]})
    assert list(getattr(r.inputs[0].contents, field)) == [1, 2, 3, 4, 5]


def test_bool_fp_bytes():
    r = _req({"inputs": [
        {"name": "b", "datatype": "BOOL", "shape": [5], "data": [True, False, True, False, True]},
        {"name": "h", "datatype": "FP16", "shape": [2], "data": [1.5, 2.5]},
        {"name": "f", "datatype": "FP64", "shape": [2], "data": [1.1, 2.2]},
        {"name": "s", "datatype": "BYTES", "shape": [1, 10], "data": ["test"]},
    ]})
    assert list(r.inputs[0].contents.bool_contents) == [True, False, True, False, True]
    assert list(r.inputs[1].contents.fp32_contents) == [1.5, 2.5]
    assert list(r.inputs[2].contents.fp64_contents) == [1.1, 2.2]
    # BYTES: shape[0] slots
    assert list(r.inputs[3].contents.bytes_contents) == [b"test"]


def test_nested_data_is_flattened_depth_first():
    r = _req({"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2, 2],
                          "data": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}]})
    assert list(r.inputs[0].contents.int_contents) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert list(r.inputs[0].shape) == [2, 2, 2]


def test_parameters_string_int_truncated_bool_and_id_dropped():
    r = _req({"id": "53c3f354", "parameters": {"foo": 1.9, "bar": True, "zoo": "something", "neg": -2.7},
              "inputs": [{"name": "t", "datatype": "INT64", "shape": [1], "data": [1],
                          "parameters": {"foo": 1, "bar": True, "zoo": "something"}}]})
    assert r.parameters["foo"].int64_param == 1
    assert r.parameters["neg"].int64_param == -2
    assert r.parameters["bar"].bool_param is True
    assert r.parameters["zoo"].string_param == "something"
    assert r.inputs[0].parameters["zoo"].string_param == "something"
    assert r.id == "" and r.model_name == "" and r.model_version == ""
    assert oj.request_from_json(json.dumps({"id": "keep", "inputs": []}), keep_id=True).id == "keep"


@pytest.mark.parametrize("bad", [None, [1], {"a": 1}])
def test_other_parameter_types_are_rejected(bad):
    with pytest.raises(oj.OipJsonError, match="parameter 'p'"):
        _req({"parameters": {"p": bad}, "inputs": []})


@pytest.mark.parametrize("body,fragment", [
    ("not json", "not valid JSON"),
    ("[1]", "JSON object"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "NOPE", "shape": [1], "data": [1]}]}), "unknown datatype"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1, 2]}]}), "holds 1"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": ["a"]}]}), "must be a number"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}]}), "must be a bool"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [-1]}]}), "out of range"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": "1", "data": [1]}]}), "shape"),
])
def test_bad_requests_say_what_and_where(body, fragment):
    with pytest.raises(oj.OipJsonError, match=fragment):
        oj.request_from_json(body)


def test_fewer_values_than_shape_are_refused_not_zero_padded():
    """The reference zero-pads; a tiny body claiming a huge shape must not allocate it."""
    with pytest.raises(oj.OipJsonError, match=r"has 1 values but shape \[1, 20000000\] holds 20000000"):
        oj.request_from_json({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 20000000], "data": [7]}]})
    with pytest.raises(oj.OipJsonError, match="holds 1000000000000"):
        oj.request_from_json({"inputs": [{"name": "x", "datatype": "FP32", "shape": [10**6, 10**6], "data": [1]}]})


def _out(datatype, field, values, params=None, shape=(5,)):
    t = pb.ModelInferResponse.InferOutputTensor(name="out1", datatype=datatype, shape=list(shape))
    getattr(t.contents, field).extend(values)
    for k, v in (params or {}).items():
        t.parameters[k].string_param = v
    return t


@pytest.mark.parametrize("datatype,field,values,expected", [
    ("BOOL", "bool_contents", [True, False, True, False, True],
     '{"data":[true,false,true,false,true],"name":"out1","shape":[5],"datatype":"BOOL"}'),
    ("UINT32", "uint_contents", [1, 2, 3, 4, 5], '{"data":[1,2,3,4,5],"name":"out1","shape":[5],"datatype":"UINT32"}'),
    ("INT64", "int64_contents", [1, 2, 3, 4, 5], '{"data":[1,2,3,4,5],"name":"out1","shape":[5],"datatype":"INT64"}'),
    ("FP32", "fp32_contents", [1.1, 2.2, 3.3, 4.4, 5.5],
     '{"data":[1.1,2.2,3.3,4.4,5.5],"name":"out1","shape":[5],"datatype":"FP32"}'),
    ("FP64", "fp64_contents", [1.1, 2.2, 3.3, 4.4, 5.5],
     '{"data":[1.1,2.2,3.3,4.4,5.5],"name":"out1","shape":[5],"datatype":"FP64"}'),
    ("BYTES", "bytes_contents", [b"test"], '{"data":["dGVzdA=="],"name":"out1","shape":[5],"datatype":"BYTES"}'),
])
def test_output_json_has_data_first(datatype, field, values, expected):
    resp = pb.ModelInferResponse(model_name="model", model_version="1", id="1234",
                                 outputs=[_out(datatype, field, values)])
    body = oj.response_to_json_bytes(resp).decode()
    assert body == '{"model_name":"model","model_version":"1","id":"1234","outputs":[' + expected + "]}"


def test_bytes_with_str_content_type_are_strings():
    resp = pb.ModelInferResponse(outputs=[_out("BYTES", "bytes_contents", [b"test"], {"content_type": "str"})])
    body = oj.response_to_json(resp)
    assert body["model_name"] == ""
    assert body["outputs"][0] == {"data": ["test"], "name": "out1", "shape": [5], "datatype": "BYTES",
                                  "parameters": {"content_type": "str"}}


def test_raw_output_contents_are_decoded_in_order():
    resp = pb.ModelInferResponse(model_name="tfsimple1", outputs=[
        pb.ModelInferResponse.InferOutputTensor(name="OUTPUT0", datatype="INT32", shape=[1, 4]),
        pb.ModelInferResponse.InferOutputTensor(name="OUTPUT1", datatype="BYTES", shape=[2]),
    ], raw_output_contents=[np.arange(4, dtype="<i4").tobytes(), join_bytes([b"a", b"bc"])])
    body = oj.response_to_json(resp.SerializeToString())
    assert body["outputs"][0]["data"] == [0, 1, 2, 3]
    assert body["outputs"][1]["data"] == ["YQ==", "YmM="]
    assert resp.raw_output_contents  # the caller's message is not modified


def test_raw_entry_i_belongs_to_output_i_like_the_binary_side():
    """The package's one rule, also for a (malformed) message mixing raw and typed contents."""
    resp = pb.ModelInferResponse(outputs=[
        pb.ModelInferResponse.InferOutputTensor(name="A", datatype="INT32", shape=[1],
                                                contents=pb.InferTensorContents(int_contents=[7])),
        pb.ModelInferResponse.InferOutputTensor(name="B", datatype="INT32", shape=[1]),
    ], raw_output_contents=[np.array([5], "<i4").tobytes()])
    outputs = {o["name"]: o["data"] for o in oj.response_to_json(resp)["outputs"]}
    assert outputs == {"A": [5], "B": None}
    assert oip.tensor_to_array(resp.outputs[0], resp.raw_output_contents[0]).tolist() == [5]


def test_too_many_raw_contents_is_an_error():
    resp = pb.ModelInferResponse(raw_output_contents=[b"\x00\x00\x00\x00"])
    with pytest.raises(oj.OipJsonError, match="Ran out of output contents"):
        oj.response_to_json(resp)


def test_response_as_request_keeps_tensors():
    resp = pb.ModelInferResponse(model_name="m", outputs=[_out("INT32", "int_contents", [1, 2], shape=(2,))])
    req = oip.response_as_request(resp)
    assert req.inputs[0].name == "out1" and list(req.inputs[0].contents.int_contents) == [1, 2]


# ---- property tests: round trips -------------------------------------------------------------

_NUMERIC = {
    "BOOL": st.booleans(),
    "UINT8": st.integers(0, 255), "UINT32": st.integers(0, 2**32 - 1), "UINT64": st.integers(0, 2**64 - 1),
    "INT8": st.integers(-128, 127), "INT32": st.integers(-(2**31), 2**31 - 1),
    "INT64": st.integers(-(2**63), 2**63 - 1),
    "FP32": st.floats(width=32, allow_nan=False, allow_infinity=False),
    "FP64": st.floats(allow_nan=False, allow_infinity=False),
    "BYTES": st.text(max_size=8),
}


@st.composite
def _tensor(draw):
    datatype = draw(st.sampled_from(sorted(_NUMERIC)))
    n = draw(st.integers(1, 6))
    values = draw(st.lists(_NUMERIC[datatype], min_size=n, max_size=n))
    nested = draw(st.booleans()) and n % 2 == 0 and datatype != "BYTES"
    shape = [2, n // 2] if nested else [n]
    data = [values[: n // 2], values[n // 2:]] if nested else values
    return {"name": draw(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,6}", fullmatch=True)),
            "datatype": datatype, "shape": shape, "data": data}, values


@settings(max_examples=150, deadline=None)
@given(st.lists(_tensor(), min_size=1, max_size=4))
def test_request_json_proto_json_round_trip(tensors):
    body = {"inputs": [t for t, _ in tensors]}
    req = oj.request_from_json(json.dumps(body))
    back = oj.request_to_json(req)
    for (spec, values), got in zip(tensors, back["inputs"]):
        assert got["name"] == spec["name"] and got["shape"] == spec["shape"]
        assert got["datatype"] == spec["datatype"]
        if spec["datatype"] == "FP32":  # shortest float32 repr: equal as float32
            assert np.array_equal(np.float32(got["data"]), np.float32(values))
        else:
            assert got["data"] == values  # flattened
    # and the raw-contents form converts to the same thing
    assert oj.request_from_json(json.dumps(back)).SerializeToString() == req.SerializeToString()


@settings(max_examples=150, deadline=None)
@given(st.lists(_tensor(), min_size=1, max_size=4), st.booleans())
def test_response_proto_json_proto_round_trip(tensors, as_strings):
    resp = pb.ModelInferResponse(model_name="m", model_version="1", id="r")
    for spec, values in tensors:
        t = resp.outputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        if spec["datatype"] == "BYTES":
            t.contents.bytes_contents.extend(v.encode() for v in values)
            if as_strings:
                t.parameters["content_type"].string_param = "str"
        else:
            getattr(t.contents, CONTENTS_FIELD[spec["datatype"]]).extend(values)
    text = oj.response_to_json_bytes(resp)
    assert next(iter(json.loads(text)["outputs"][0])) == "data"
    back = oj.response_from_json(text, bytes_are_base64=True)  # text: Go's "-0" is -0.0
    assert back == resp
