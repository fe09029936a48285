"""Example tests for dataflow.oip: one per wire rule (schema-registry prefix, the rules
every chain type shares, join merge, batch merge)."""
from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow import oip
from dataflow.oip import CodecError


def _response(raw: bool = False) -> ModelInferResponse:
    resp = oip.make_response(
        [("a", np.array([1, 2], np.int32)), ("b", np.array([1.5], np.float32)), ("c", [b"x"])],
        id="req-1", parameters={"p": "v", "n": 3}, raw=raw, model_name="m", model_version="7",
    )
    return resp


def _request(raw: bool = False) -> ModelInferRequest:
    req = oip.make_request(
        [("a", np.array([1, 2], np.int32)), ("b", np.array([1.5], np.float32)), ("c", [b"x"])],
        id="req-1", parameters={"p": "v"}, raw=raw,
    )
    req.model_name = "m"
    req.model_version = "7"
    req.outputs.add(name="wanted")
    return req


# ---------------------------------------------------------------- Kafka values

def test_schema_prefix_is_stripped_only_when_magic_zero_and_long_enough():
    body = oip.make_request({"x": np.array([1], np.int64)}).SerializeToString()
    assert oip.strip_schema_prefix(b"\x00\x00\x00\x00\x07\x00" + body) == body
    assert oip.strip_schema_prefix(body) == body
    assert oip.strip_schema_prefix(b"\x00\x01") == b"\x00\x01"
    assert oip.parse_request(b"\x00\x00\x00\x00\x07\x00" + body) == oip.parse_request(body)


def test_empty_bytes_are_an_empty_message_and_none_is_an_error():
    assert oip.parse_request(b"") == ModelInferRequest()
    assert not oip.has_tensors(oip.parse_response(b""))
    with pytest.raises(CodecError, match="tombstone"):
        oip.parse_request(None)


@pytest.mark.parametrize("junk", [b"\x2a\x05abc", b"\xff\xff\xff", b"\x0a\x10short"])
def test_truncated_or_garbage_protobuf_raises_codec_error(junk):
    with pytest.raises(CodecError, match="cannot parse ModelInferRequest"):
        oip.parse_request(junk)


def test_truncated_real_message_raises():
    body = _request().SerializeToString()
    with pytest.raises(CodecError):
        oip.parse_request(body[:-3])


def test_request_bytes_parse_as_response_for_fields_1_to_5():
    """Triggers parse requests as responses (trigger values): inputs land in outputs."""
    req = oip.make_request({"ok": np.array([1], np.int32)}, id="x")
    resp = oip.parse_response(req.SerializeToString())
    assert resp.id == "x" and [t.name for t in resp.outputs] == ["ok"]


# ---------------------------------------------------------------- rules every chain type shares

def test_converter_keeps_only_id_parameters_and_tensors():
    out = oip.convert_to_request(_response())
    assert isinstance(out, ModelInferRequest)
    assert out.id == "req-1" and dict(out.parameters) == dict(_response().parameters)
    assert out.model_name == "" and out.model_version == ""
    assert [t.name for t in out.inputs] == ["a", "b", "c"]

    filtered = oip.filter_request(_request())
    assert filtered.model_name == "" and filtered.model_version == "" and len(filtered.outputs) == 0
    assert filtered.id == "req-1" and filtered.parameters["p"].string_param == "v"


def test_selection_keeps_source_order_not_subset_order():
    out = oip.filter_response(_response(), ["c", "a"])
    assert [t.name for t in out.outputs] == ["a", "c"]


def test_empty_or_none_subset_keeps_all():
    assert oip.filter_response(_response(), []) == oip.filter_response(_response(), None)
    assert len(oip.filter_response(_response(), set()).outputs) == 3


def test_renaming_uses_original_names():
    out = oip.convert_to_response(_request(), ["a", "c"], {"a": "A", "b": "B"})
    assert [t.name for t in out.outputs] == ["A", "c"]
    assert oip.response_arrays(out)["A"].tolist() == [1, 2]


def test_tensor_copy_keeps_datatype_shape_parameters_and_contents():
    req = oip.make_request({"t": np.zeros((2, 3), np.float64)},
                             tensor_parameters={"t": {"content_type": "np"}})
    out = oip.convert_to_response(req)
    t = out.outputs[0]
    assert (t.datatype, list(t.shape)) == ("FP64", [2, 3])
    assert t.parameters["content_type"].string_param == "np"
    assert list(t.contents.fp64_contents) == [0.0] * 6


def test_raw_source_drops_typed_contents_and_aligns_raw_by_original_index():
    resp = _response(raw=True)
    resp.outputs[2].contents.bytes_contents.append(b"typed-ignored")  # typed next to raw: dropped
    out = oip.convert_to_request(resp, ["c", "b"])
    assert [t.name for t in out.inputs] == ["b", "c"]
    assert all(not t.HasField("contents") for t in out.inputs)
    assert list(out.raw_input_contents) == [resp.raw_output_contents[1], resp.raw_output_contents[2]]
    arrays = oip.request_arrays(out)
    assert arrays["b"].tolist() == [1.5] and arrays["c"].tolist() == [b"x"]


def test_raw_shorter_than_tensors_appends_only_existing_indexes():
    resp = _response(raw=True)
    del resp.raw_output_contents[2:]  # tensor "c" has no raw entry
    out = oip.filter_response(resp, ["a", "c"])
    assert [t.name for t in out.outputs] == ["a", "c"]
    assert list(out.raw_output_contents) == [resp.raw_output_contents[0]]
    assert not out.outputs[1].HasField("contents")  # source had raw: contents not copied


def test_selecting_nothing_gives_empty_result():
    out = oip.convert_to_request(_response(), ["missing"])
    assert not oip.has_tensors(out)
    assert out.id == "req-1"
    assert oip.has_tensors(oip.convert_to_request(_response(), ["a"]))
    assert not oip.has_tensors(None)


def test_duplicate_names_all_kept_by_selection():
    resp = oip.make_response([("o", np.array([1], np.int32)), ("o", np.array([2], np.int32))])
    out = oip.filter_response(resp, ["o"])
    assert [a.tolist() for _, a in oip.response_tensors(out)] == [[1], [2]]
    assert oip.response_arrays(out)["o"].tolist() == [2]  # dict view: last wins


def test_converters_do_not_modify_source():
    resp = _response(raw=True)
    before = resp.SerializeToString()
    oip.convert_to_request(resp, ["a"], {"a": "z"})
    oip.to_typed(resp)
    oip.to_raw(resp)
    assert resp.SerializeToString() == before


# ---------------------------------------------------------------- join values

def test_join_none_side_returns_other():
    r = _request()
    assert oip.join_values(None, r) is r and oip.join_values(r, None) is r
    assert oip.join_values(None, None) is None


def test_join_order_and_fields_from_left():
    left = oip.make_response({"l": np.array([1], np.int32)}, id="L", parameters={"k": "left"})
    right = oip.make_response({"r": np.array([2], np.int32)}, id="R", parameters={"k": "right", "x": 1})
    out = oip.join_values(left, right)
    assert out.id == "L" and out.parameters["k"].string_param == "left" and "x" not in out.parameters
    assert [t.name for t in out.outputs] == ["l", "r"]
    assert len(out.raw_output_contents) == 0


def test_join_mixed_raw_typed_converts_typed_side_to_raw():
    left = oip.make_request({"l": np.array([1, 2], np.int64)})
    right = oip.make_request({"r": [b"ab", b""]}, raw=True)
    out = oip.join_values(left, right)
    assert len(out.raw_input_contents) == 2
    assert all(not t.HasField("contents") for t in out.inputs)
    arrays = oip.request_arrays(out)
    assert arrays["l"].tolist() == [1, 2] and arrays["r"].tolist() == [b"ab", b""]
    out2 = oip.join_values(right, left)
    assert [t.name for t in out2.inputs] == ["r", "l"]
    assert oip.request_arrays(out2)["l"].tolist() == [1, 2]


def test_join_rejects_mixed_message_types():
    with pytest.raises(CodecError, match="cannot join"):
        oip.join_values(_request(), _response())


# ---------------------------------------------------------------- batch merge

def test_merge_batch_shape_sum_metadata_from_last_and_parameter_union():
    a = oip.make_request({"x": np.ones((1, 2), np.float32), "y": [b"a"]}, id="first",
                           parameters={"p": 1}, tensor_parameters={"x": {"u": "a", "v": 1}})
    b = oip.make_request({"x": np.zeros((2, 2), np.float32), "y": [b"b", b"c"]}, id="last",
                           parameters={"q": 2}, tensor_parameters={"x": {"v": 2}})
    b.model_name, b.model_version = "m", "3"
    out = oip.merge_batch([a, b])
    assert (out.id, out.model_name, out.model_version) == ("last", "m", "3")
    assert set(out.parameters) == {"q"}
    assert [t.name for t in out.inputs] == ["x", "y"]
    assert list(out.inputs[0].shape) == [3, 2]
    assert out.inputs[0].parameters["u"].string_param == "a"
    assert out.inputs[0].parameters["v"].int64_param == 2
    arrays = oip.request_arrays(out)
    assert arrays["x"].tolist() == [[1, 1], [0, 0], [0, 0]]
    assert arrays["y"].tolist() == [b"a", b"b", b"c"]
    assert len(out.raw_input_contents) == 0


def test_merge_batch_groups_by_first_appearance():
    a = oip.make_request([("b", np.array([1])), ("a", np.array([2]))])
    b = oip.make_request([("a", np.array([3])), ("c", np.array([4])), ("b", np.array([5]))])
    out = oip.merge_batch([a, b])
    assert [t.name for t in out.inputs] == ["b", "a", "c"]
    assert oip.request_arrays(out)["b"].tolist() == [1, 5]


def test_merge_batch_any_raw_makes_everything_raw():
    typed = oip.make_request({"x": np.array([[1, 2]], np.int16)})
    raw = oip.make_request({"x": np.array([[3, 4]], np.int16)}, raw=True)
    out = oip.merge_batch([typed, raw, typed])
    assert len(out.raw_input_contents) == 1 and not out.inputs[0].HasField("contents")
    assert oip.request_arrays(out)["x"].tolist() == [[1, 2], [3, 4], [1, 2]]


def test_merge_batch_typed_uses_shared_contents_fields():
    reqs = [oip.make_request({"u": np.array([i], np.uint8)}) for i in range(3)]
    out = oip.merge_batch(reqs)
    assert list(out.inputs[0].contents.uint_contents) == [0, 1, 2]


def test_merge_batch_errors():
    with pytest.raises(CodecError):
        oip.merge_batch([])
    scalar = ModelInferRequest()
    scalar.inputs.add(name="s", datatype="INT32")
    with pytest.raises(CodecError, match="no dimensions"):
        oip.merge_batch([scalar])
    a = oip.make_request({"x": np.array([1], np.int32)})
    b = oip.make_request({"x": np.array([1], np.int64)})
    with pytest.raises(CodecError, match="INT64"):
        oip.merge_batch([a, b])


# ---------------------------------------------------------------- malformed tensors

def _tensor(datatype, shape, raw=None):
    req = ModelInferRequest()
    req.inputs.add(name="t", datatype=datatype, shape=shape)
    return req.inputs[0]


def test_raw_length_not_multiple_of_element_size():
    with pytest.raises(CodecError, match=r"tensor 't'.*10 bytes.*4-byte INT32"):
        oip.tensor_to_array(_tensor("INT32", [2]), b"\x00" * 10)


def test_raw_element_count_mismatch_names_counts():
    with pytest.raises(CodecError, match=r"hold 2 .* shape \[3\] needs 3"):
        oip.tensor_to_array(_tensor("INT32", [3]), b"\x00" * 8)


def test_bytes_length_prefix_overrunning():
    with pytest.raises(CodecError, match="declares 9 bytes"):
        oip.tensor_to_array(_tensor("BYTES", [1]), b"\x09\x00\x00\x00abc")
    with pytest.raises(CodecError, match="truncated"):
        oip.tensor_to_array(_tensor("BYTES", [2]), b"\x01\x00\x00\x00a\x02\x00")


def test_typed_count_mismatch_and_unknown_datatype_and_range():
    t = _tensor("FP32", [2, 2])
    t.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    with pytest.raises(CodecError, match=r"fp32_contents hold 3 FP32 elements but shape \[2, 2\] needs 4"):
        oip.tensor_to_array(t)
    with pytest.raises(CodecError, match="unknown datatype 'FP8'"):
        oip.tensor_to_array(_tensor("FP8", [1]))
    t = _tensor("UINT8", [1])
    t.contents.uint_contents.append(300)
    with pytest.raises(CodecError, match="out of range for UINT8"):
        oip.tensor_to_array(t)


def test_to_typed_reports_bad_raw():
    req = oip.make_request({"x": np.array([1, 2], np.int32)}, raw=True)
    req.raw_input_contents[0] = b"\x00" * 7
    with pytest.raises(CodecError, match="tensor 'x'"):
        oip.to_typed(req)


def test_bad_user_arrays():
    with pytest.raises(CodecError, match="no OIP datatype"):
        oip.make_request({"c": np.array([1j])})
    with pytest.raises(CodecError, match="not bool, int or str"):
        oip.make_request({"x": np.array([1])}, parameters={"f": 1.5})
    with pytest.raises(CodecError, match="unknown datatype"):
        oip.make_request({"x": np.array([1])}, datatypes={"x": "INT128"})


# ---------------------------------------------------------------- FP16 and BYTES decisions

def test_fp16_raw_accepts_halfs_and_reference_floats():
    values = np.array([0.5, -2.0, 3.0], np.float16)
    halfs = values.tobytes()
    floats = values.astype("<f4").tobytes()
    t = _tensor("FP16", [3])
    assert oip.tensor_to_array(t, halfs).tolist() == values.tolist()
    assert oip.tensor_to_array(t, floats).tolist() == values.tolist()
    raw = oip.make_request({"h": values}, raw=True)
    assert raw.raw_input_contents[0] == halfs  # we write standard 2-byte halfs
    assert list(oip.make_request({"h": values}).inputs[0].contents.fp32_contents) == [0.5, -2.0, 3.0]


def test_rest_style_bytes_shape():
    t = _tensor("BYTES", [1, 11])
    t.contents.bytes_contents.append(b"hello world")
    assert oip.tensor_to_array(t).tolist() == [b"hello world"]


def test_str_elements_are_utf8_encoded_and_bytes_not_truncated():
    req = oip.make_request({"s": ["é", "b\x00"]})
    assert list(req.inputs[0].contents.bytes_contents) == ["é".encode(), b"b\x00"]
    assert req.inputs[0].datatype == "BYTES"


def test_datatype_of_and_tables():
    assert oip.datatype_of(np.zeros(1, np.uint16)) == "UINT16"
    assert oip.datatype_of(np.zeros(1, np.float16)) == "FP16"
    assert oip.datatype_of(np.array([b"a"], object)) == "BYTES"
    assert oip.datatype_of(np.array([True])) == "BOOL"
    assert set(oip.CONTENTS_FIELD) == set(oip.DATATYPES)
    assert oip.CONTENTS_FIELD["FP16"] == "fp32_contents"


def test_a_bare_string_subset_is_one_tensor_name():
    out = oip.filter_response(_response(), "ab")
    assert not oip.has_tensors(out)
    assert [t.name for t in oip.filter_response(_response(), "a").outputs] == ["a"]


@pytest.mark.parametrize("raw", [False, True])
def test_check_tensors_accepts_what_tensor_to_array_reads(raw):
    oip.check_tensors(_request(raw))
    oip.check_tensors(_response(raw))
    req = ModelInferRequest()
    req.inputs.add(name="s", datatype="BYTES", shape=[2, 3]).contents.bytes_contents.extend([b"a", b"b"])
    oip.check_tensors(req)  # REST-style BYTES: one element per row
    half = ModelInferRequest()
    half.inputs.add(name="h", datatype="FP16", shape=[2])
    half.raw_input_contents.append(np.array([1, 2], "<f4").tobytes())  # the reference's 4-byte FP16
    oip.check_tensors(half)


def _claim(shape, values=(), raw=None, datatype="INT32"):
    req = ModelInferRequest()
    t = req.inputs.add(name="x", datatype=datatype, shape=list(shape))
    if raw is not None:
        req.raw_input_contents.append(raw)
    else:
        t.contents.int_contents.extend(values)
    return req


@pytest.mark.parametrize("req,fragment", [
    (_claim([1, 20_000_000], [1]), r"int_contents hold 1 INT32 elements but shape \[1, 20000000\] needs 20000000"),
    (_claim([10**9, 10**9], raw=b"\0" * 4), "needs 1000000000000000000"),
    (_claim([2], raw=b"\0" * 6), "not a multiple of the 4-byte INT32"),
    (_claim([1], raw=b"\x09\0\0\0x", datatype="BYTES"), "overruns"),
    (_claim([-1]), "negative dimension"),
    (_claim([1], [1], datatype="INT128"), "unknown datatype"),
])
def test_check_tensors_refuses_claims_without_allocating_them(req, fragment):
    with pytest.raises(CodecError, match=fragment):
        oip.check_tensors(req)
