"""Pipeline gateway over the embedded broker with a simulated pipeline (REST + gRPC)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dataflow.kafka import TopicNamer
from gateways.pipeline_service import PipelineGatewayConfig, PipelineGatewayService
from tests.waiting import wait_until

from .harness import BackgroundLoop, free_port
from .simulated import SimulatedPipeline

PARTITIONS = 2


@pytest.fixture(scope="module")
def env(kafka):
    namer = TopicNamer(prefix=kafka.unique("pgw").replace("-", ""))
    pipeline = "tfsimples"
    kafka.create_topics(namer.pipeline_inputs(pipeline), namer.pipeline_outputs(pipeline), partitions=PARTITIONS)
    kafka.create_topics(namer.pipeline_inputs("silent"), namer.pipeline_outputs("silent"), partitions=PARTITIONS)
    cfg = PipelineGatewayConfig(settings=kafka.settings, namer=namer, http_port=free_port(), grpc_port=free_port(),
                                host="127.0.0.1", timeout_s=5.0, consumer_prefix=kafka.unique("pgw"))
    bg = BackgroundLoop()
    svc = PipelineGatewayService(cfg)
    bg.run(svc.start())
    sim = SimulatedPipeline(kafka, namer.pipeline_inputs(pipeline), namer.pipeline_outputs(pipeline),
                            model="tfsimple1")
    with sim:
        yield {"cfg": cfg, "pipeline": pipeline, "namer": namer, "svc": svc, "sim": sim, "bg": bg}
    bg.run(svc.stop())
    bg.close()


BODY = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 4], "data": [[1, 2, 3, 4]]},
                   {"name": "S", "datatype": "BYTES", "shape": [1], "data": ["hi"],
                    "parameters": {"content_type": "str"}}]}


def _post(env, body, headers=None, path=None):
    url = f"http://127.0.0.1:{env['cfg'].http_port}{path or '/v2/models/' + env['pipeline'] + '/infer'}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_rest_success_returns_json_and_headers(env):
    status, headers, body = _post(env, BODY, {"seldon-model": f"{env['pipeline']}.pipeline",
                                              "X-Request-Id": "req-1", "X-Custom": "abc"})
    assert status == 200, body
    out = json.loads(body)
    assert [o["name"] for o in out["outputs"]] == ["OUT_INPUT0", "OUT_S"]
    assert out["outputs"][0]["data"] == [1, 2, 3, 4]
    assert next(iter(out["outputs"][0])) == "data"
    assert out["outputs"][1]["data"] == ["hi"]
    ids = headers.get_all("X-Request-Id")
    p, name, rid = ids[0].split(".", 2)
    assert int(p) in range(PARTITIONS) and name == env["pipeline"] and rid == "req-1"
    assert "req-1" in ids[1:]  # the plain x-request-id header comes back too
    assert headers.get("x-custom") == "abc" and headers.get("x-pipeline-version") == "1"


def test_rest_pipeline_path_without_header_uses_path(env):
    status, headers, body = _post(env, BODY, path=f"/v2/pipelines/{env['pipeline']}/infer")
    assert status == 200, body
    rid = headers.get_all("X-Request-Id")[0].split(".", 2)[2]
    assert len(rid) == 20  # generated xid-like id


def test_rest_error_record_is_400_with_reference_shape(env):
    body = dict(BODY, parameters={"fail": "unexpected shape for input 'INPUT0'"})
    status, _, payload = _post(env, body, {"seldon-model": f"{env['pipeline']}.pipeline"})
    assert status == 400
    assert payload.decode() == ("tfsimple1 : rpc error: code = InvalidArgument desc = "
                                "unexpected shape for input 'INPUT0'")


def test_rest_bad_header_and_bad_json_are_400(env):
    assert _post(env, BODY, {"seldon-model": "a.b.c"}, path="/v2/models/x/infer")[0] == 400
    assert _post(env, {"inputs": [{"name": "x", "datatype": "NOPE", "shape": [1], "data": [1]}]},
                 {"seldon-model": f"{env['pipeline']}.pipeline"})[0] == 400


def test_rest_timeout_is_504_not_a_hang(env):
    body = dict(BODY, parameters={"drop": True})
    status, _, payload = _post(env, body, {"seldon-model": f"{env['pipeline']}.pipeline"})
    assert status == 504, payload
    assert not env["svc"].gateway._pending  # the pending entry was released


def test_ready_endpoints(env):
    def get(path, headers=None):
        req = urllib.request.Request(f"http://127.0.0.1:{env['cfg'].http_port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
    assert get("/ready") == 200
    assert get(f"/v2/pipelines/{env['pipeline']}/ready") == 200
    assert get("/v2/pipelines/unknown/ready") == 404
    assert get("/v2/models/x/ready", {"seldon-model": "x"}) == 400


def _grpc_request():
    req = pb.ModelInferRequest()
    t = req.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 4])
    t.contents.int_contents.extend([1, 2, 3, 4])
    return req


def test_grpc_success_error_and_timeout(env):
    with grpc.insecure_channel(f"127.0.0.1:{env['cfg'].grpc_port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        md = [("seldon-model", f"{env['pipeline']}.pipeline"), ("x-request-id", "g-1"), ("x-foo", "bar")]
        resp, call = stub.ModelInfer.with_call(_grpc_request(), metadata=md, timeout=30)
        assert resp.outputs[0].name == "OUT_INPUT0"
        assert list(resp.outputs[0].contents.int_contents) == [1, 2, 3, 4]
        got = dict(call.initial_metadata())
        assert got["x-request-id"].endswith(f".{env['pipeline']}.g-1")
        assert got["x-foo"] == "bar"

        bad = _grpc_request()
        bad.parameters["fail"].string_param = "boom"
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(bad, metadata=md[:1], timeout=30)
        assert err.value.code() == grpc.StatusCode.UNKNOWN
        assert err.value.details() == "tfsimple1 : rpc error: code = InvalidArgument desc = boom"

        drop = _grpc_request()
        drop.parameters["drop"].bool_param = True
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(drop, metadata=md[:1], timeout=30)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(_grpc_request(), timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name=env["pipeline"]), timeout=10).ready
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="x"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=env["pipeline"]), timeout=10)
        assert meta.name == env["pipeline"] and meta.platform == "seldon-pipeline"
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelConfig(pb.ModelConfigRequest(name="x"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_metrics_are_counted(env):
    reg = env["svc"].gateway.metrics.registry
    assert reg.get_sample_value("seldon_pipeline_infer_total",
                                {"server": "pipeline-gateway", "pipeline": env["pipeline"],
                                 "method_type": "rest", "code": "200"}) >= 1


def test_two_replicas_split_partitions_and_both_answer(kafka):
    """Replicas share the consumer group: each produces only to partitions it owns, so both answer."""
    namer = TopicNamer(prefix=kafka.unique("pgw2").replace("-", ""))
    kafka.create_topics(namer.pipeline_inputs("p"), namer.pipeline_outputs("p"), partitions=2)
    prefix = kafka.unique("pgw2")
    bg = BackgroundLoop()
    services = []
    for _ in range(2):
        cfg = PipelineGatewayConfig(settings=kafka.settings, namer=namer, http_port=free_port(),
                                    grpc_port=free_port(), host="127.0.0.1", timeout_s=20.0, consumer_prefix=prefix)
        svc = PipelineGatewayService(cfg)
        bg.run(svc.start())
        services.append(svc)
    try:
        with SimulatedPipeline(kafka, namer.pipeline_inputs("p"), namer.pipeline_outputs("p")):
            env0 = {"cfg": services[0].config, "pipeline": "p"}
            env1 = {"cfg": services[1].config, "pipeline": "p"}
            hdr = {"seldon-model": "p.pipeline"}
            assert _post(env0, BODY, hdr)[0] == 200  # loads the pipeline on both replicas' consumers
            _post(env1, BODY, hdr)

            def owned() -> list[set[int]]:
                return [set(c.partitions(namer.pipeline_outputs("p"))) if (c := s.gateway.consumers().get(
                    s.gateway.group_id("p"))) else set() for s in services]

            # The group rebalances incrementally: the first replica gives up one partition, then
            # the second takes it (two rounds of the group protocol).
            wait_until(lambda: all(owned()), 60, "both replicas owning a partition")
            split = owned()
            assert split[0].isdisjoint(split[1]) and split[0] | split[1] == {0, 1}, split
            for _ in range(3):
                assert _post(env0, BODY, hdr)[0] == 200
                assert _post(env1, BODY, hdr)[0] == 200
    finally:
        for svc in services:
            bg.run(svc.stop())
        bg.close()


def test_pipeline_announced_before_its_topics_exist(kafka, env):
    """The scheduler announces a pipeline before the engine created its topics: served once they appear."""

    namer = env["namer"]

    async def load():
        env["svc"].gateway.load_pipeline("later", 1)
    env["bg"].run(load())
    # The topics appear only after the gateway has looked for them and found none (it looks once
    # a second); nothing tells when it looked, so time must pass.
    time.sleep(1.5)  # the spell without topics is what is under test
    kafka.create_topics(namer.pipeline_inputs("later"), namer.pipeline_outputs("later"), partitions=PARTITIONS)
    with SimulatedPipeline(kafka, namer.pipeline_inputs("later"), namer.pipeline_outputs("later")):
        status, _, body = _post(env, BODY, {"seldon-model": "later.pipeline"})
    assert status == 200, body


@pytest.mark.timeout(30)
def test_without_scheduler_unknown_names_are_404_and_not_subscribed(env):
    """Without a scheduler a name is served only if its output topic exists; others get 404 at once."""
    gw = env["svc"].gateway
    consumers = {g: set(c.topics) for g, c in gw.consumers().items()}
    for header in ("bogus.model", "bogus.pipeline", "bogus"):
        status, _, body = _post(env, BODY, {"seldon-model": header}, path="/v2/models/bogus/infer")
        assert status == 404, (header, body)
    with grpc.insecure_channel(f"127.0.0.1:{env['cfg'].grpc_port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(_grpc_request(), metadata=[("seldon-model", "bogus.model")], timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert {g: set(c.topics) for g, c in gw.consumers().items()} == consumers
    assert not any(r.name == "bogus" for r in gw._loaded)


def test_tritonclient_http_unmodified(env):
    """The standard HTTP client, as a user points it at an OIP server: health, metadata, infer with
    the binary tensor extension (its default) and without, async infer."""
    import numpy as np
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{env['cfg'].http_port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_server_metadata()
        assert meta["name"] == "dataflow-pipeline-gateway" and "binary_tensor_data" in meta["extensions"]
        assert client.get_model_metadata(env["pipeline"])["platform"] == "seldon-pipeline"
        wait_until(lambda: client.is_model_ready(env["pipeline"]))  # served from the first call on
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        s = np.array([b"hi", b"\xffraw"], dtype=object)
        for binary in (True, False):
            x = httpclient.InferInput("INPUT0", [1, 16], "INT32")
            x.set_data_from_numpy(a, binary_data=binary)
            y = httpclient.InferInput("S", [2], "BYTES")
            y.set_data_from_numpy(s, binary_data=True)  # BYTES that are not UTF-8 need binary
            outputs = None if binary else [httpclient.InferRequestedOutput("OUT_INPUT0", binary_data=False),
                                           httpclient.InferRequestedOutput("OUT_S", binary_data=True)]
            result = client.infer(env["pipeline"], [x, y], outputs=outputs)
            assert np.array_equal(result.as_numpy("OUT_INPUT0"), a)
            assert list(result.as_numpy("OUT_S")) == [b"hi", b"\xffraw"]
            out0 = result.get_output("OUT_INPUT0")
            assert ("binary_data_size" in out0.get("parameters", {})) is binary
        fp = httpclient.InferInput("INPUT0", [3], "FP32")
        fp.set_data_from_numpy(np.array([10, 0.5, 1e-7], dtype=np.float32), binary_data=False)
        pending = client.async_infer(env["pipeline"], [fp], outputs=[httpclient.InferRequestedOutput("OUT_INPUT0",
                                                                                               binary_data=False)])
        assert pending.get_result().get_output("OUT_INPUT0")["data"] == [10, 0.5, 1e-7]
    finally:
        client.close()


def test_tritonclient_grpc_unmodified(env):
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{env['cfg'].grpc_port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata().name == "dataflow-pipeline-gateway"
        assert client.get_model_metadata(env["pipeline"]).platform == "seldon-pipeline"
        wait_until(lambda: client.is_model_ready(env["pipeline"]))
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        x = grpcclient.InferInput("INPUT0", [1, 16], "INT32")
        x.set_data_from_numpy(a)
        assert np.array_equal(client.infer(env["pipeline"], [x]).as_numpy("OUT_INPUT0"), a)
    finally:
        client.close()


def test_rest_json_numbers_are_written_as_the_go_gateway_does(env):
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP64", "shape": [4], "data": [10.0, 0.5, 1e-7, 1e21]}]}
    status, _, payload = _post(env, body, path=f"/v2/pipelines/{env['pipeline']}/infer")
    assert status == 200, payload
    assert b'"data":[10,0.5,1e-7,1e+21]' in payload


def test_curl_with_the_binary_tensor_extension(env, tmp_path):
    """curl, as a user types it: a binary INT32 input after the JSON header, a binary output asked
    for; the answer's JSON header and tensor bytes are split at Inference-Header-Content-Length."""
    import shutil
    import subprocess

    import numpy as np

    curl = shutil.which("curl")
    assert curl, "curl is a prerequisite of this test"
    values = np.array([[1, 2, 3, 4]], dtype=np.int32)
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 4],
                                     "parameters": {"binary_data_size": values.nbytes}}],
                         "outputs": [{"name": "OUT_INPUT0", "parameters": {"binary_data": True}}]}).encode()
    (tmp_path / "body").write_bytes(header + values.tobytes())
    url = f"http://127.0.0.1:{env['cfg'].http_port}/v2/models/{env['pipeline']}/infer"
    run = subprocess.run([curl, "-sS", "-X", "POST", url, "-H", "Content-Type: application/octet-stream",
                          "-H", f"Inference-Header-Content-Length: {len(header)}",
                          "--data-binary", f"@{tmp_path / 'body'}", "-D", str(tmp_path / "headers"),
                          "-o", str(tmp_path / "answer"), "-w", "%{http_code}"],
                         capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout) == (0, "200"), run.stderr + (tmp_path / "answer").read_bytes()[:300].decode()
    headers = dict(line.split(": ", 1) for line in (tmp_path / "headers").read_text().splitlines()[1:] if ": " in line)
    length = int({k.lower(): v for k, v in headers.items()}["inference-header-content-length"])
    answer = (tmp_path / "answer").read_bytes()
    meta = json.loads(answer[:length])
    out = meta["outputs"][0]
    assert (out["name"], out["datatype"], out["shape"], out["parameters"]["binary_data_size"]) == \
        ("OUT_INPUT0", "INT32", [1, 4], values.nbytes)
    assert np.frombuffer(answer[length:], dtype=np.int32).tolist() == values.ravel().tolist()
