"""The sample models answer like the reference samples, over OIP REST and gRPC, from one real
MLServer subprocess (started once for the module by ``gateways.mlserver_process``)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateways.mlserver_process import MLServerError, MLServerProcess

pytestmark = pytest.mark.e2e

IN16_A = np.arange(1, 17, dtype=np.int32).reshape(1, 16)
IN16_B = np.ones((1, 16), dtype=np.int32)
FOUR = np.array([1, 2, 3, 4], dtype=np.float32)

# (model, inputs {name: array}, expected outputs {name: array}; None = "must be absent")
CASES = [
    ("tfsimple1", {"INPUT0": IN16_A, "INPUT1": IN16_B}, {"OUTPUT0": IN16_A + 1, "OUTPUT1": IN16_A - 1}),
    ("tfsimple2", {"INPUT0": IN16_B, "INPUT1": IN16_B}, {"OUTPUT0": IN16_B * 2, "OUTPUT1": IN16_B * 0}),
    ("tfsimple3", {"INPUT0": IN16_A, "INPUT1": IN16_A}, {"OUTPUT0": IN16_A * 2, "OUTPUT1": IN16_A * 0}),
    ("add10", {"INPUT": FOUR}, {"OUTPUT": FOUR + 10}),
    ("mul10", {"INPUT": FOUR}, {"OUTPUT": FOUR * 10}),
    ("conditional", {"CHOICE": np.array([0], np.int32), "INPUT0": FOUR, "INPUT1": FOUR + 1},
     {"OUTPUT0": FOUR, "OUTPUT1": None}),
    ("conditional", {"CHOICE": np.array([1], np.int32), "INPUT0": FOUR, "INPUT1": FOUR + 1},
     {"OUTPUT1": FOUR + 1, "OUTPUT0": None}),
    ("check", {"INPUT": IN16_A * 2}, {"OUTPUT": IN16_A * 2}),
    ("check", {"INPUT": IN16_A * 10}, {"OUTPUT": None}),
    ("outlier-error", {"INPUT": FOUR}, {"OUTPUT": FOUR}),
    ("id1_node", {"INPUT1": np.array([1], np.int64)}, {"OUTPUT1": np.array([1], np.int64)}),
    ("id2_node", {"INPUT1": np.array([True])}, {"OUTPUT1": np.array([True])}),
    ("join_node", {"INPUT1": np.array([1], np.int64), "INPUT2": np.array([1], np.int64)},
     {"OUTPUT1": np.array([2], np.int64)}),
    ("choice-is-one", {"choice": np.array([1], np.int32), "INPUT": FOUR},
     {"choice": np.array([1], np.int32)}),
    ("choice-is-one", {"choice": np.array([2], np.int32), "INPUT": FOUR}, {"choice": None}),
    ("choice-is-two", {"choice": np.array([2], np.int32), "INPUT": FOUR},
     {"choice": np.array([2], np.int32)}),
    ("counter", {"counter-pipeline.inputs": np.array([0], np.int32)},
     {"output": np.array([[1]], np.int32), "continue": np.array([[b""]], object), "stop": None}),
    ("counter", {"output": np.array([[9]], np.int32)},
     {"output": np.array([[10]], np.int32), "stop": np.array([[b""]], object), "continue": None}),
    ("identity", {"INPUT": FOUR}, {"INPUT": FOUR}),
    ("identity-loop", {"output": np.array([[3]], np.int32)}, {"output": np.array([[3]], np.int32)}),
    ("identity-output", {"output": np.array([[3]], np.int32)}, {"output": np.array([[3]], np.int32)}),
    ("iris", {"predict": np.array([[6.7, 3.0, 5.2, 2.3]], np.float32)},
     {"predict": np.array([[2]], np.int64)}),
]

DATATYPES = {np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32",
             np.dtype(np.bool_): "BOOL", np.dtype(object): "BYTES"}


@pytest.fixture(scope="module")
def mlserver():
    server = MLServerProcess().start()
    try:
        yield server
    finally:
        pid = server.pid
        server.stop()
        server.stop()  # idempotent
    with pytest.raises(ProcessLookupError):  # stop() leaves no process behind
        os.kill(pid, 0)


def _case_id(case) -> str:
    model, inputs, _ = case
    return f"{model}-" + "-".join(f"{k}{np.asarray(v).ravel()[0]}" for k, v in inputs.items())


def _http_infer(server, model, inputs):
    client = httpclient.InferenceServerClient(f"{server.host}:{server.http_port}")
    try:
        request = []
        for name, value in inputs.items():
            tensor = httpclient.InferInput(name, list(value.shape), DATATYPES[value.dtype])
            tensor.set_data_from_numpy(value, binary_data=False)
            request.append(tensor)
        return client.infer(model, request)
    finally:
        client.close()


def _grpc_infer(server, model, inputs):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:
        request = []
        for name, value in inputs.items():
            tensor = grpcclient.InferInput(name, list(value.shape), DATATYPES[value.dtype])
            tensor.set_data_from_numpy(value)
            request.append(tensor)
        return client.infer(model, request)
    finally:
        client.close()


def _check(result, expected):
    for name, want in expected.items():
        got = result.as_numpy(name)
        if want is None:
            assert got is None, f"{name} should be absent"
        else:
            assert got is not None, f"{name} missing"
            assert got.shape == want.shape
            if want.dtype == object:
                as_text = lambda x: x.decode() if isinstance(x, bytes) else str(x)  # noqa: E731
                assert [as_text(x) for x in got.ravel()] == [as_text(x) for x in want.ravel()]
            else:
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_model_answers_over_rest(mlserver, case):
    model, inputs, expected = case
    _check(_http_infer(mlserver, model, inputs), expected)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_model_answers_over_grpc(mlserver, case):
    model, inputs, expected = case
    _check(_grpc_infer(mlserver, model, inputs), expected)


def test_model_versions(mlserver):
    assert _grpc_infer(mlserver, "iris", {"predict": np.zeros((1, 4), np.float32)}) \
        .get_response().model_version == "v1"
    assert _grpc_infer(mlserver, "add10", {"INPUT": FOUR}).get_response().model_version == "1"


def test_outlier_error_is_http_400(mlserver):
    with pytest.raises(InferenceServerException) as info:
        _http_infer(mlserver, "outlier-error", {"INPUT": np.array([100, 2, 3, 4], np.float32)})
    assert info.value.status() == "400"
    assert "outlier" in info.value.message()


def test_outlier_error_is_grpc_invalid_argument(mlserver):
    with pytest.raises(InferenceServerException) as info:
        _grpc_infer(mlserver, "outlier-error", {"INPUT": np.array([100, 2, 3, 4], np.float32)})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_tfsimple_rejects_wrong_shape_like_triton(mlserver):
    wide = np.zeros((1, 20), np.int32)
    with pytest.raises(InferenceServerException) as info:
        _grpc_infer(mlserver, "tfsimple1", {"INPUT0": wide, "INPUT1": wide})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "Expected [-1,16], got [1,20]" in info.value.message()


def test_tfsimple_answers_grpc_in_raw_contents_as_triton(mlserver):
    """Whichever encoding the request used; other models keep MLServer's choice (raw only for a
    raw request), and REST answers stay JSON."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    typed = pb.ModelInferRequest(model_name="tfsimple1")
    for name, value in (("INPUT0", IN16_A), ("INPUT1", IN16_B)):
        t = typed.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        t.contents.int_contents.extend(value.ravel().tolist())
    with grpc.insecure_channel(mlserver.grpc_address) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        resp = stub.ModelInfer(typed, timeout=30)
        assert [o.name for o in resp.outputs] == ["OUTPUT0", "OUTPUT1"]
        assert not any(o.contents.ByteSize() for o in resp.outputs), (len(resp.raw_output_contents),
                                                                      mlserver.log_tail()[-4000:])
        assert np.frombuffer(resp.raw_output_contents[0], np.int32).tolist() == (IN16_A + 1).ravel().tolist()
        other = pb.ModelInferRequest(model_name="add10")
        t = other.inputs.add(name="INPUT", datatype="FP32", shape=[4])
        t.contents.fp32_contents.extend(FOUR.tolist())
        resp = stub.ModelInfer(other, timeout=30)
        assert not resp.raw_output_contents and list(resp.outputs[0].contents.fp32_contents) == (FOUR + 10).tolist()
    rest = _http_infer(mlserver, "tfsimple1", {"INPUT0": IN16_A, "INPUT1": IN16_B}).get_response()
    assert rest["outputs"][0]["data"] == (IN16_A + 1).ravel().tolist()


def test_unknown_model_subset_is_a_clear_error():
    with pytest.raises(MLServerError, match="unknown model"):
        MLServerProcess(models=["no-such-model"]).start()


def test_server_death_surfaces_log_tail(tmp_path):
    """A model that fails to load stops MLServer; start() says so with the server's own words."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model-settings.json").write_text(
        '{"name": "broken", "implementation": "no_such_module.Model"}')
    with pytest.raises(MLServerError) as info:
        MLServerProcess(tmp_path, models=["broken"]).start(timeout=60)
    assert "no_such_module" in str(info.value)
