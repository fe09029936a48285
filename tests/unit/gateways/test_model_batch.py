"""Stacking requests to one model into one call and cutting the answer back (gateways.model_batch)."""
from __future__ import annotations

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from gateways import model_batch


def _req(rows: list[list[int]], raw: bool, rid: str = "") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m", id=rid)
    for name in ("INPUT0", "INPUT1"):
        t = req.inputs.add(name=name, datatype="INT32", shape=[len(rows), len(rows[0])])
        flat = [v for row in rows for v in row]
        if raw:
            req.raw_input_contents.append(np.asarray(flat, dtype="<i4").tobytes())
        else:
            t.contents.int_contents.extend(flat)
    return req


def _answer(merged: pb.ModelInferRequest, raw: bool) -> pb.ModelInferResponse:
    """What an elementwise model (out = in + 10) answers to ``merged``."""
    resp = pb.ModelInferResponse(model_name="m", model_version="1")
    for i, t in enumerate(merged.inputs):
        values = np.frombuffer(merged.raw_input_contents[i], dtype="<i4") + 10
        o = resp.outputs.add(name=t.name.replace("INPUT", "OUTPUT"), datatype="INT32", shape=t.shape)
        if raw:
            resp.raw_output_contents.append(values.astype("<i4").tobytes())
        else:
            o.contents.int_contents.extend(values.tolist())
    return resp


def _values(resp: pb.ModelInferResponse, i: int) -> list[int]:
    if resp.raw_output_contents:
        return np.frombuffer(resp.raw_output_contents[i], dtype="<i4").tolist()
    return list(resp.outputs[i].contents.int_contents)


def test_requests_in_either_encoding_stack_on_the_first_dimension_and_answers_cut_back():
    reqs = [_req([[1, 2]], raw=True, rid="a"), _req([[3, 4], [5, 6]], raw=False, rid="b"), _req([[7, 8]], raw=True)]
    merged = model_batch.merge(reqs)
    assert [list(t.shape) for t in merged.inputs] == [[4, 2], [4, 2]]
    assert np.frombuffer(merged.raw_input_contents[0], dtype="<i4").tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    for raw in (True, False):
        parts = model_batch.split(_answer(merged, raw), reqs)
        assert [p.id for p in parts] == ["a", "b", ""]
        assert [list(p.outputs[0].shape) for p in parts] == [[1, 2], [2, 2], [1, 2]]
        assert [_values(p, 0) for p in parts] == [[11, 12], [13, 14, 15, 16], [17, 18]]
        assert all(bool(p.raw_output_contents) == raw for p in parts)


def test_requests_that_do_not_stack_exactly_are_not_merged():
    a = _req([[1, 2]], raw=True)
    other_width = _req([[1, 2, 3]], raw=True)
    assert model_batch.merge([a, other_width]) is None
    renamed = _req([[1, 2]], raw=True)
    renamed.inputs[1].name = "X"
    assert model_batch.merge([a, renamed]) is None
    with_params = _req([[1, 2]], raw=True)
    with_params.parameters["k"].int64_param = 1
    assert model_batch.merge([a, with_params]) is None
    short = _req([[1, 2]], raw=True)
    short.raw_input_contents[0] = short.raw_input_contents[0][:4]   # fewer values than its shape
    assert model_batch.merge([a, short]) is None
    text = pb.ModelInferRequest(model_name="m")
    text.inputs.add(name="INPUT0", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    assert model_batch.merge([text, text]) is None


def test_an_answer_that_does_not_follow_the_batch_is_not_cut():
    reqs = [_req([[1, 2]], raw=True), _req([[3, 4]], raw=True)]
    resp = _answer(model_batch.merge(reqs), raw=True)
    resp.outputs[0].shape[0] = 1   # e.g. a model that reduces over the first dimension
    assert model_batch.split(resp, reqs) is None


def _meta(inputs, outputs):
    return {"inputs": [{"name": f"I{i}", "shape": s} for i, s in enumerate(inputs)],
            "outputs": [{"name": f"O{i}", "shape": s} for i, s in enumerate(outputs)]}


def test_a_batch_dimension_is_a_variable_first_dimension_on_every_tensor():
    assert model_batch.declares_batch_dimension(_meta([[-1, 16], [-1, 16]], [[-1, 16], [-1]]))
    assert not model_batch.declares_batch_dimension(_meta([[-1, 16], [1, 16]], [[-1, 16]]))
    assert not model_batch.declares_batch_dimension(_meta([[-1, 16]], [[16, -1]]))
    assert not model_batch.declares_batch_dimension(_meta([[-1, 16]], [[]]))      # shape unknown
    assert not model_batch.declares_batch_dimension(_meta([[-1, 16]], []))        # no outputs declared
    assert not model_batch.declares_batch_dimension(_meta([], [[-1]]))
    assert not model_batch.declares_batch_dimension(None)
    assert not model_batch.declares_batch_dimension({})
