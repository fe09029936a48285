"""End to end through the whole stack (broker, MLServer, scheduler, engine, both gateways), as a
user drives it: REST and gRPC calls, the CLI, errors, pipeline-to-pipeline, batch scoring."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dataflow.kafka import KafkaSettings, TopicNamer
from dataflow.oip import json as oip_json
from gateways.batch import BatchJob, BatchRun

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PIPELINES = ["tfsimples", "tfsimple", "tfsimples-join", "conditional", "trigger-joins", "tfsimple-extended", "error"]
A = list(range(1, 17))
B = [1] * 16
TFSIMPLE_BODY = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": A},
                            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": B}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from dataflow_cli.demo.stack import Stack, UpOptions

    opts = UpOptions(kafka_port=0, scheduler_port=0, chainer_port=0, http_port=0, grpc_port=0,
                     mlserver_http_port=0, mlserver_grpc_port=0, metrics_port=0,
                     pipelines=[REPO / "examples" / "pipelines" / f"{p}.yaml" for p in PIPELINES],
                     state_dir=tmp_path_factory.mktemp("stack"), ready_timeout=240)
    st = Stack(opts, out=open(os.devnull, "w"))
    try:
        st.start()
    except Exception:
        st.stop()
        raise
    yield st
    st.stop()


def rest(stack, pipeline: str, body: dict, headers: dict | None = None):
    req = urllib.request.Request(f"{stack.inference_url}/v2/models/{pipeline}/infer", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json",
                                                         "seldon-model": f"{pipeline}.pipeline", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def grpc_call(stack, pipeline: str, body: dict):
    with grpc.insecure_channel(stack.inference_grpc.split("://")[-1]) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        resp, call = stub.ModelInfer.with_call(oip_json.request_from_json(body),
                                               metadata=[("seldon-model", f"{pipeline}.pipeline")], timeout=60)
        return oip_json.response_to_json(resp), dict(call.initial_metadata())


def outputs(body: dict) -> dict:
    return {o["name"]: o["data"] for o in body["outputs"]}


def test_chain_rest_and_grpc(stack):
    status, headers, body = rest(stack, "tfsimples", TFSIMPLE_BODY, {"X-Request-Id": "e2e-chain"})
    assert status == 200, body
    assert outputs(body) == {"OUTPUT0": [2 * a for a in A], "OUTPUT1": [2 * b for b in B]}
    assert headers.get_all("X-Request-Id")[0].endswith(".tfsimples.e2e-chain")
    assert headers.get("x-pipeline-version") == "1"
    gbody, md = grpc_call(stack, "tfsimples", TFSIMPLE_BODY)
    assert outputs(gbody) == outputs(body)
    assert ".tfsimples." in md["x-request-id"]
    with urllib.request.urlopen(f"http://{stack.opt.host}:{stack.metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'seldon_pipeline_infer_total{code="200",method_type="rest",pipeline="tfsimples"' in metrics
    assert "seldon_pipeline_infer_api_seconds_bucket" in metrics


def test_standard_clients_unmodified(stack):
    """tritonclient over HTTP (binary tensors, its default, and JSON) and gRPC: health, metadata,
    infer through a real pipeline and MLServer, no Seldon header (the URL names the pipeline)."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    a = np.array([A], dtype=np.int32)
    b = np.array([B], dtype=np.int32)
    http = httpclient.InferenceServerClient(stack.inference_url.split("://")[-1])
    try:
        assert http.is_server_live() and http.is_server_ready() and http.is_model_ready("tfsimples")
        meta = http.get_model_metadata("tfsimples")
        tensors = [{"name": n, "datatype": "INT32", "shape": [-1, 16]} for n in ("INPUT0", "INPUT1")]
        assert meta["name"] == "tfsimples"  # tensors from tfsimple1's inputs and tfsimple2's outputs
        assert (meta["inputs"], [t["name"] for t in meta["outputs"]]) == (tensors, ["OUTPUT0", "OUTPUT1"])
        for binary in (True, False):
            inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"),
                      httpclient.InferInput("INPUT1", [1, 16], "INT32")]
            inputs[0].set_data_from_numpy(a, binary_data=binary)
            inputs[1].set_data_from_numpy(b, binary_data=binary)
            outputs = None if binary else [httpclient.InferRequestedOutput(n, binary_data=False)
                                           for n in ("OUTPUT0", "OUTPUT1")]
            result = http.infer("tfsimples", inputs, outputs=outputs)
            assert np.array_equal(result.as_numpy("OUTPUT0"), 2 * a), binary
            assert np.array_equal(result.as_numpy("OUTPUT1"), 2 * b), binary
    finally:
        http.close()
    g = grpcclient.InferenceServerClient(stack.inference_grpc.split("://")[-1])
    try:
        assert g.is_server_live() and g.is_server_ready() and g.is_model_ready("tfsimples")
        gmeta = g.get_model_metadata("tfsimples")
        assert gmeta.name == "tfsimples" and [t.name for t in gmeta.inputs] == ["INPUT0", "INPUT1"]
        assert [t.name for t in gmeta.outputs] == ["OUTPUT0", "OUTPUT1"] and list(gmeta.outputs[0].shape) == [-1, 16]
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        assert np.array_equal(g.infer("tfsimples", inputs).as_numpy("OUTPUT0"), 2 * a)
    finally:
        g.close()


def test_join(stack):
    status, _, body = rest(stack, "join", TFSIMPLE_BODY)
    assert status == 200, body
    # tfsimple3(INPUT0 = a+b, INPUT1 = a-b) = (2a, 2b)
    assert outputs(body) == {"OUTPUT0": [2 * a for a in A], "OUTPUT1": [2 * b for b in B]}


@pytest.mark.parametrize("choice,expected", [(0, {"OUTPUT": [10.0, 20.0, 30.0, 40.0]}),
                                             (1, {"OUTPUT": [15.0, 16.0, 17.0, 18.0]})])
def test_conditional(stack, choice, expected):
    body = {"inputs": [{"name": "CHOICE", "datatype": "INT32", "shape": [1], "data": [choice]},
                       {"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]},
                       {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": [5, 6, 7, 8]}]}
    status, _, out = rest(stack, "tfsimple-conditional", body)
    assert status == 200, out
    assert outputs(out) == expected


def test_trigger(stack):
    body = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]},
                       {"name": "ok1", "datatype": "FP32", "shape": [1], "data": [1]}]}
    gbody, _ = grpc_call(stack, "trigger-joins", body)
    assert outputs(gbody) == {"OUTPUT": [10.0, 20.0, 30.0, 40.0]}


def test_pipeline_to_pipeline(stack):
    from confluent_kafka import Consumer, TopicPartition

    status, headers, body = rest(stack, "tfsimple", TFSIMPLE_BODY)
    assert status == 200, body
    key = headers.get_all("X-Request-Id")[0]
    topic = TopicNamer().pipeline_outputs("tfsimple-extended")
    c = Consumer(KafkaSettings(bootstrap_servers=stack.bootstrap).consumer("e2e-p2p", offset_reset="earliest"))
    c.assign([TopicPartition(topic, 0, 0)])
    found = None
    deadline = time.monotonic() + 30
    while found is None and time.monotonic() < deadline:
        for m in c.consume(100, 0.2):
            if not m.error() and m.key() and m.key().decode() == key:
                found = m
    c.close()
    assert found is not None, "tfsimple-extended produced nothing for the tfsimple request"
    assert outputs(oip_json.response_to_json(found.value())) == {"OUTPUT0": [2 * a for a in A],
                                                                 "OUTPUT1": [2 * b for b in B]}


def test_model_error_is_400_and_unknown(stack):
    bad = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [4], "data": [100, 2, 3, 4]}]}
    status, _, text = rest(stack, "error", bad)
    assert status == 400
    assert text.startswith("outlier-error : rpc error: code = InvalidArgument desc = ")
    assert "outlier detected" in text
    with pytest.raises(grpc.RpcError) as err:
        grpc_call(stack, "error", bad)
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    assert err.value.details() == text
    ok = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}
    assert rest(stack, "error", ok)[0] == 200


def test_cli_infer(stack):
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "dataflow_cli", "pipeline", "infer", "tfsimples", json.dumps(TFSIMPLE_BODY),
           "--inference-host", stack.inference_url.split("://")[-1]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert outputs(json.loads(out.stdout))["OUTPUT0"] == [2 * a for a in A]
    bad = [sys.executable, "-m", "dataflow_cli", "pipeline", "infer", "error",
           '{"inputs":[{"name":"INPUT","datatype":"FP32","shape":[4],"data":[100,2,3,4]}]}',
           "--inference-host", stack.inference_url.split("://")[-1]]
    out = subprocess.run(bad, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1 and "HTTP 400" in out.stderr and "Traceback" not in out.stderr


def test_cli_batch(stack, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(TFSIMPLE_BODY) + "\n" for _ in range(20)))
    cmd = [sys.executable, "-m", "dataflow_cli", "pipeline", "batch", "tfsimples", "--input", str(src),
           "--output", str(tmp_path / "out.jsonl"), "--kafka", stack.bootstrap]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "done: 20 scored, 0 errors" in out.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 20


def test_batch_through_real_pipeline_with_resume(stack, tmp_path):
    n = 300
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [i] * 16},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}]}) + "\n" for i in range(n)))
    out = tmp_path / "out.jsonl"
    settings = KafkaSettings(bootstrap_servers=stack.bootstrap)
    job = BatchJob(pipeline="tfsimples", input=str(src), output=str(out), max_in_flight=64, progress=False,
                   stop_after=100)
    BatchRun(job, settings).run()
    job.stop_after = None
    BatchRun(job, settings).run()
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["index"] for r in results) == list(range(n))
    for r in results:
        assert outputs(r["response"])["OUTPUT0"] == [2 * r["index"]] * 16


@pytest.mark.slow
def test_batch_ten_thousand_through_two_step_pipeline(stack, tmp_path):
    """10k requests through tfsimples (2 model steps, real MLServer), interrupted then resumed."""
    n = 10_000
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [i % 1000] * 16},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}]}) + "\n" for i in range(n)))
    out = tmp_path / "out.jsonl"
    settings = KafkaSettings(bootstrap_servers=stack.bootstrap)
    job = BatchJob(pipeline="tfsimples", input=str(src), output=str(out), max_in_flight=400, progress=False,
                   stop_after=3000)
    first = BatchRun(job, settings).run()
    job.stop_after = None
    second = BatchRun(job, settings).run()
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["index"] for r in results) == list(range(n))
    for r in results:
        assert outputs(r["response"])["OUTPUT0"] == [2 * (r["index"] % 1000)] * 16
    print(f"\n10k batch: first run {first.throughput:,.0f} req/s, resumed run {second.throughput:,.0f} req/s, "
          f"{second.duplicates} late duplicates dropped")


@pytest.mark.parametrize("mode", ["http", "grpc"])
def test_model_gateway_modes_against_real_mlserver(stack, mode):
    """A second model gateway (own topic prefix) calling the stack's MLServer over REST or gRPC."""
    import asyncio

    from confluent_kafka import Consumer, Producer, TopicPartition
    from tritonclient.grpc import service_pb2 as pb

    from gateways.model_gateway import ModelGateway

    port = stack.mlserver_http_port if mode == "http" else stack.mlserver_grpc_port
    endpoint = f"{mode}://{stack.opt.host}:{port}"
    namer = TopicNamer(prefix=f"e2e{mode}")
    settings = KafkaSettings(bootstrap_servers=stack.bootstrap)

    async def scenario():
        gw = await ModelGateway(settings, namer, consumer_prefix=f"e2e-{mode}").start()
        from dataflow.kafka import ensure_topics

        await asyncio.to_thread(ensure_topics, settings, [namer.errors()], 1)
        try:
            await gw.add_model("add10", endpoint)
            await gw.add_model("outlier-error", endpoint)
            assert await asyncio.to_thread(gw.wait_assigned, "add10") and \
                await asyncio.to_thread(gw.wait_assigned, "outlier-error")
            prod = Producer(settings.producer())
            for model, values in (("add10", [1, 2, 3, 4]), ("outlier-error", [100, 2, 3, 4])):
                req = pb.ModelInferRequest()
                t = req.inputs.add(name="INPUT", datatype="FP32", shape=[4])
                t.contents.fp32_contents.extend(values)
                prod.produce(namer.model_inputs(model), req.SerializeToString(), key=f"0.p.{model}",
                             headers=[("pipeline", b"p"), ("x-request-id", model.encode())])
            prod.flush(10)

            def read(topic):
                c = Consumer(settings.consumer(f"e2e-read-{mode}-{topic}", offset_reset="earliest"))
                c.assign([TopicPartition(topic, 0, 0)])
                deadline = time.monotonic() + 30
                try:
                    while time.monotonic() < deadline:
                        for m in c.consume(10, 0.2):
                            if not m.error():
                                return m
                finally:
                    c.close()
            ok = await asyncio.to_thread(read, namer.model_outputs("add10"))
            err = await asyncio.to_thread(read, namer.errors())
            return ok, err
        finally:
            await gw.close()

    ok, err = asyncio.run(scenario())
    assert ok is not None and err is not None
    out = pb.ModelInferResponse()
    out.ParseFromString(ok.value())
    assert outputs(oip_json.response_to_json(out)) == {"OUTPUT": [11.0, 12.0, 13.0, 14.0]}
    assert ("seldon-pipeline-errors", b"outlier-error") in err.headers()
    text = err.value().decode()
    if mode == "grpc":
        assert text.startswith("rpc error: code = InvalidArgument desc = ") and "outlier detected" in text
    else:
        assert "outlier detected" in text  # MLServer's HTTP 400 JSON body, as the reference forwards it
