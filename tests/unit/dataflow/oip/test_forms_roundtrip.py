"""Round trips between the three forms a tensor takes: REST JSON, typed contents and raw contents.

One message built from arrays, in every form, must read back as the same arrays; the JSON side
and the binary side agree because they share one raw-contents rule (see ``dataflow.oip``)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow import oip
from dataflow.oip import json as oj
from dataflow.oip.datatypes import NUMPY_DTYPE, WIDE_DTYPE

FIXED = sorted(set(NUMPY_DTYPE) - {"BYTES"})


def _no_negative_zero(x: float) -> float:
    return x + 0.0  # JSON writes -0.0 as Go's "-0", which a request body reads as the integer 0


@st.composite
def tensor(draw, datatypes=(*FIXED, "BYTES")):
    """(datatype, array) with values every form can carry exactly."""
    datatype = draw(st.sampled_from(datatypes))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=3))
    if datatype == "BYTES":
        n = int(np.prod(shape))
        items = draw(st.lists(st.text(max_size=5).map(str.encode), min_size=n, max_size=n))
        arr = np.empty(n, dtype=object)
        arr[:] = items
        return datatype, arr.reshape(shape)
    dtype = NUMPY_DTYPE[datatype]
    elements = None
    if dtype.kind == "f":
        elements = st.floats(width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False).map(_no_negative_zero)
    return datatype, draw(hnp.arrays(dtype, shape, elements=elements))


tensors = st.lists(tensor(), min_size=1, max_size=4)


def _request(items, raw: bool) -> ModelInferRequest:
    named = [(f"t{i}", arr) for i, (_, arr) in enumerate(items)]
    return oip.make_request(named, id="r", raw=raw, datatypes={f"t{i}": dt for i, (dt, _) in enumerate(items)})


def _response(items, raw: bool) -> ModelInferResponse:
    named = [(f"t{i}", arr) for i, (_, arr) in enumerate(items)]
    return oip.make_response(named, id="r", raw=raw, datatypes={f"t{i}": dt for i, (dt, _) in enumerate(items)})


def _same_arrays(got, items) -> bool:
    return len(got) == len(items) and all(
        g.dtype == a.dtype and g.shape == a.shape and np.array_equal(g, a) for (_, g), (_, a) in zip(got, items))


@settings(max_examples=100, deadline=None)
@given(tensors)
def test_typed_and_raw_are_one_message(items):
    typed, raw = _request(items, raw=False), _request(items, raw=True)
    assert oip.to_raw(typed) == raw
    assert oip.to_typed(raw) == typed
    assert _same_arrays(oip.request_tensors(typed), items) and _same_arrays(oip.request_tensors(raw), items)


@settings(max_examples=100, deadline=None)
@given(tensors, st.booleans())
def test_request_json_reads_back_as_the_typed_message(items, raw):
    msg = _request(items, raw=raw)
    body = oj.dumps(oj.request_to_json(msg))
    assert oj.request_from_json(body, keep_id=True) == oip.to_typed(msg)


@settings(max_examples=100, deadline=None)
@given(tensors)
def test_response_json_is_the_same_for_typed_and_raw_and_reads_back(items):
    typed, raw = _response(items, raw=False), _response(items, raw=True)
    text = oj.response_to_json_bytes(typed)
    assert oj.response_to_json_bytes(raw) == text
    back = oj.response_from_json(text, bytes_are_base64=True)
    assert _same_arrays(oip.response_tensors(back), items)


@settings(max_examples=100, deadline=None)
@given(tensors)
def test_binary_extension_body_is_the_raw_message(items):
    raw = _request(items, raw=True)
    body = oj.request_to_json(raw)
    for spec, data in zip(body["inputs"], raw.raw_input_contents):
        del spec["data"]
        spec["parameters"] = {**spec.get("parameters", {}), "binary_data_size": len(data)}
    header = oj.dumps(body).encode()
    req, _ = oj.request_from_http(header + b"".join(raw.raw_input_contents), len(header))
    raw.id = ""  # a REST body's id is not forwarded (as the reference gateway)
    assert req == raw


@settings(max_examples=100, deadline=None)
@given(tensor(datatypes=tuple(sorted(WIDE_DTYPE))))
def test_narrow_types_read_the_same_at_native_and_at_four_byte_width(item):
    datatype, arr = item
    native = _request([item], raw=True)
    wide = ModelInferRequest()
    wide.CopyFrom(native)
    wide.raw_input_contents[0] = arr.reshape(-1).astype(WIDE_DTYPE[datatype]).tobytes()
    assert oip.to_typed(wide) == oip.to_typed(native)
    assert oj.request_to_json(wide) == oj.request_to_json(native)
