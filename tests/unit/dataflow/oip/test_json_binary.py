"""The KServe v2 binary tensor extension and Go-style JSON numbers (dataflow.oip.json)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from dataflow.oip import json as oj


def _body(inputs: list[dict], binary: bytes, **extra) -> tuple[bytes, int]:
    head = json.dumps({"inputs": inputs, **extra}).encode()
    return head + binary, len(head)


def test_all_binary_inputs_become_raw_contents_and_the_extension_parameters_are_consumed():
    a = np.arange(6, dtype="<f4")
    s = b"\x02\0\0\0hi\x01\0\0\0\xff"
    body, n = _body([{"name": "A", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
                     {"name": "S", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(s)}}],
                    a.tobytes() + s, parameters={"binary_data_output": True},
                    outputs=[{"name": "O", "parameters": {"binary_data": False}}])
    req, fmt = oj.request_from_http(body, str(n))
    assert list(req.raw_input_contents) == [a.tobytes(), s]
    assert not req.inputs[0].HasField("contents") and "binary_data_size" not in req.inputs[0].parameters
    assert "binary_data_output" not in req.parameters and "binary_data" not in req.outputs[0].parameters
    assert fmt.is_binary("X") and not fmt.is_binary("O")


def test_mixed_binary_and_json_inputs_become_typed_contents():
    body, n = _body([{"name": "A", "datatype": "INT32", "shape": [2], "parameters": {"binary_data_size": 8}},
                     {"name": "B", "datatype": "INT32", "shape": [1], "data": [5]}],
                    np.array([7, 8], "<i4").tobytes())
    req, fmt = oj.request_from_http(body, n)
    assert not req.raw_input_contents
    assert [list(t.contents.int_contents) for t in req.inputs] == [[7, 8], [5]]
    assert not fmt.is_binary("A")


@pytest.mark.parametrize("inputs,binary,length,fragment", [
    ([{"name": "A", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": 4}}], b"", None,
     "has no Inference-Header-Content-Length"),
    ([{"name": "A", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": 4}}], b"\0" * 4, None,
     "Extra data.*needs the Inference-Header-Content-Length header"),
    ([{"name": "A", "datatype": "INT32", "shape": [1], "data": [1], "parameters": {"binary_data_size": 4}}],
     b"\0" * 4, "auto", "both data and binary_data_size"),
    ([{"name": "A", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": -4}}], b"", "auto",
     "must be a non-negative integer"),
    ([{"name": "A", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": 3}}], b"\0" * 3, "auto",
     "not a multiple of the 4-byte INT32 element"),
    ([{"name": "S", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 5}}], b"\x09\0\0\0x",
     "auto", "overruns the data"),
    ([{"name": "A", "datatype": "INT32", "shape": [1]}], b"", "-1", "outside the"),
])
def test_bad_binary_requests_say_why(inputs, binary, length, fragment):
    body, n = _body(inputs, binary)
    with pytest.raises(oj.OipJsonError, match=fragment):
        oj.request_from_http(body, n if length == "auto" else length)


def _response(raw: bool) -> pb.ModelInferResponse:
    resp = pb.ModelInferResponse(model_name="m")
    a = resp.outputs.add(name="A", datatype="FP32", shape=[2])
    s = resp.outputs.add(name="S", datatype="BYTES", shape=[1])
    if raw:
        resp.raw_output_contents.extend([np.array([1.5, 10], "<f4").tobytes(), b"\x02\0\0\0hi"])
    else:
        a.contents.fp32_contents.extend([1.5, 10])
        s.contents.bytes_contents.append(b"hi")
    return resp


@pytest.mark.parametrize("raw", [True, False])
def test_binary_outputs_follow_the_json_header(raw):
    body, n = oj.response_to_http(_response(raw).SerializeToString(), oj.OutputFormat(binary={"A": True}))
    head = json.loads(body[:n])
    a, s = head["outputs"]
    assert "data" not in a and a["parameters"] == {"binary_data_size": 8}
    assert s["data"] == ["aGk="]  # JSON output of a raw response decoded
    assert np.array_equal(np.frombuffer(body[n:], "<f4"), [1.5, 10])


def test_without_binary_outputs_the_body_is_plain_json():
    body, n = oj.response_to_http(_response(True), oj.OutputFormat())
    assert n is None and json.loads(body)["outputs"][0]["data"] == [1.5, 10]
    assert b'"data":[1.5,10]' in body


@pytest.mark.parametrize("value,text", [
    (10.0, "10"), (-0.0, "-0"), (0.1, "0.1"), (1.5e-05, "0.000015"), (1e-06, "0.000001"), (1e-07, "1e-7"),
    (1.5e-07, "1.5e-7"), (1e20, "100000000000000000000"), (1e21, "1e+21"), (1.5e300, "1.5e+300"),
    (123.456, "123.456"), (float("nan"), "NaN"),
])
def test_floats_are_written_as_go_encoding_json_writes_them(value, text):
    assert oj.go_float(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_floats_read_back_to_the_same_value(value):
    assert float(json.loads(oj.dumps([value, 1]))[0]) == value
