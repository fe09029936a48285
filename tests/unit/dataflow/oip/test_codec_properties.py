"""Hypothesis properties of dataflow.oip: round trips, raw/typed equivalence, selection and renaming laws."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dataflow import oip

NUMERIC = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}

shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)


@st.composite
def arrays(draw):
    datatype = draw(st.sampled_from(sorted(NUMERIC) + ["BYTES"]))
    shape = draw(shapes)
    if datatype == "BYTES":
        n = int(np.prod(shape))
        items = draw(st.lists(st.binary(max_size=6), min_size=n, max_size=n))
        arr = np.empty(n, dtype=object)
        arr[:] = items
        return datatype, arr.reshape(shape)
    elements = None
    if datatype.startswith("FP"):
        elements = st.floats(width=int(np.dtype(NUMERIC[datatype]).itemsize * 8), allow_nan=False)
    return datatype, draw(hnp.arrays(NUMERIC[datatype], shape, elements=elements))


names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
named_arrays = st.lists(st.tuples(names, arrays()), max_size=5, unique_by=lambda item: item[0])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tolist() == b.tolist()


def _expected(items):
    return [(name, arr) for name, (_, arr) in items]


def _assert_tensors_equal(got, expected):
    assert [n for n, _ in got] == [n for n, _ in expected]
    for (_, a), (_, b) in zip(got, expected):
        assert _same(a, b), (a, b)


def _build(items, raw, response=False):
    make = oip.make_response if response else oip.make_request
    return make([(n, a) for n, (_, a) in items], raw=raw, datatypes={n: d for n, (d, _) in items},
                id="some-id", parameters={"k": "v"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(named_arrays, st.booleans(), st.booleans())
def test_round_trip_through_bytes(items, raw, response):
    msg = _build(items, raw, response)
    parse = oip.parse_response if response else oip.parse_request
    tensors = oip.response_tensors if response else oip.request_tensors
    back = parse(msg.SerializeToString())
    _assert_tensors_equal(tensors(back), _expected(items))
    assert [t.datatype for t in (back.outputs if response else back.inputs)] == [d for _, (d, _) in items]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(named_arrays, st.booleans())
def test_raw_and_typed_are_equivalent(items, start_raw):
    msg = _build(items, start_raw)
    raw = oip.to_raw(msg)
    typed = oip.to_typed(msg)
    assert len(raw.raw_input_contents) == len(items) and not any(t.HasField("contents") for t in raw.inputs)
    assert len(typed.raw_input_contents) == 0
    for variant in (raw, typed, oip.to_typed(raw), oip.to_raw(typed)):
        _assert_tensors_equal(oip.request_tensors(variant), _expected(items))
    assert oip.to_typed(raw) == _build(items, False)
    assert oip.to_raw(typed) == _build(items, True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(named_arrays, st.booleans(), st.lists(names, max_size=4))
def test_selection_keeps_order_and_is_idempotent(items, raw, subset):
    msg = _build(items, raw, response=True)
    once = oip.filter_response(msg, subset)
    twice = oip.filter_response(once, subset)
    assert once == twice
    expected = [(n, a) for n, a in _expected(items) if not subset or n in subset]
    _assert_tensors_equal(oip.response_tensors(once), expected)
    assert oip.has_tensors(once) == bool(expected)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(named_arrays, st.booleans())
def test_empty_renames_and_full_selection_are_identity(items, raw):
    req = _build(items, raw)
    assert oip.filter_request(req, None, {}) == req
    assert oip.filter_request(req, [n for n, _ in items], None) == req


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(named_arrays, st.booleans(), st.dictionaries(names, names, max_size=3))
def test_convert_there_and_back_preserves_tensors(items, raw, renames):
    resp = _build(items, raw, response=True)
    back = oip.convert_to_response(oip.convert_to_request(resp, None, renames))
    expected = [(renames.get(n, n), a) for n, a in _expected(items)]
    _assert_tensors_equal(oip.response_tensors(back), expected)
    assert back.id == resp.id and back.parameters == resp.parameters


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(named_arrays, named_arrays, st.booleans(), st.booleans())
def test_join_concatenates_tensors_for_any_raw_mix(left_items, right_items, left_raw, right_raw):
    left, right = _build(left_items, left_raw), _build(right_items, right_raw)
    out = oip.join_values(left, right)
    _assert_tensors_equal(oip.request_tensors(out), _expected(left_items) + _expected(right_items))


@st.composite
def batches(draw):
    """Requests sharing tensor names/datatypes/tails but with varying first dimensions."""
    schema = draw(st.lists(st.tuples(names, st.sampled_from(sorted(NUMERIC))), min_size=1, max_size=3,
                           unique_by=lambda x: x[0]))
    tails = {name: draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)) for name, _ in schema}
    requests = []
    for _ in range(draw(st.integers(1, 4))):
        rows = draw(st.integers(0, 3))
        items = [(name, (dt, draw(hnp.arrays(NUMERIC[dt], (rows,) + tails[name],
                                             elements=st.integers(0, 100).map(
                                                 lambda v, dt=dt: v % 2 if dt == "BOOL" else v)))))
                 for name, dt in schema]
        requests.append((items, draw(st.booleans())))
    return requests


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batches())
def test_merge_batch_concatenates_rows(requests):
    msgs = [_build(items, raw) for items, raw in requests]
    out = oip.merge_batch(msgs)
    any_raw = any(raw for _, raw in requests)
    assert (len(out.raw_input_contents) > 0) == any_raw
    merged = oip.request_arrays(out)
    for name, (_, _) in requests[0][0]:
        parts = [dict(_expected(items))[name] for items, _ in requests]
        assert _same(merged[name], np.concatenate(parts))
