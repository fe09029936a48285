"""Readiness that means it and timeouts that follow the pipeline, with the minimal scheduler.

scheduler_min runs in-process, a fake engine acks the engines' side, the pipeline gateway is the
real service on the embedded broker; a stand-in copies requests to answers where one is needed.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from chainer_api import scheduler_pb2
from dataflow.kafka import TopicNamer
from dataflow_cli import main
from dataflow_testing.fake_engine import FakeEngine
from gateways.pipeline_service import PipelineGatewayConfig, PipelineGatewayService
from gateways.pipeline_timeouts import MODEL_TIMEOUT_S
from gateways.routing import Resource
from scheduler_min import convert
from scheduler_min.client import SchedulerClient
from scheduler_min.server import SchedulerConfig, run_in_thread
from tests.waiting import wait_until

from .harness import BackgroundLoop, free_port
from .simulated import SimulatedPipeline

S = scheduler_pb2.PipelineVersionState


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def stack(kafka, tmp_path, monkeypatch):
    """(scheduler client, gateway service, its config, topic namer); the gateway's own timeout is 1 s."""
    sched = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", state_dir=str(tmp_path / "st")))
    engine = FakeEngine(sched.chainer_address, "engine-ready")
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(tmp_path / "no-config.json"))
    monkeypatch.setenv("SELDON_SCHEDULE_HOST", sched.address)
    namer = TopicNamer(prefix=kafka.unique("rdy").replace("-", ""))
    cfg = PipelineGatewayConfig(settings=kafka.settings, namer=namer, scheduler=sched.address,
                                http_port=free_port(), grpc_port=free_port(), host="127.0.0.1", timeout_s=1.0,
                                consumer_prefix=kafka.unique("rdy"), subscriber="pgw-ready")
    svc = PipelineGatewayService(cfg)
    bg = BackgroundLoop()
    bg.run(svc.start())
    client = SchedulerClient(sched.address)
    try:
        yield client, svc, cfg, namer
    finally:
        bg.run(svc.stop())
        bg.close()
        client.close()
        engine.close()
        sched.stop()


def _load(client, kafka, namer, yaml_text: str) -> str:
    p = convert.pipelines_from_yaml(yaml_text)[0]
    kafka.create_topics(namer.pipeline_inputs(p.name), namer.pipeline_outputs(p.name))
    client.load_pipeline(p)
    wait_until(lambda: client.pipeline_status(p.name)[0].versions[-1].state.pipelineGwStatus == S.PipelineReady)
    return p.name


def test_a_pipeline_is_not_ready_until_its_models_are(kafka, stack, capsys):
    client, _svc, cfg, namer = stack
    name = kafka.unique("rdyp").replace("-", "")
    model = f"{name}m"
    _load(client, kafka, namer, f"kind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n  steps:\n    - name: {model}\n")
    state = client.pipeline_status(name)[0].versions[-1].state
    assert (state.status, state.modelsReady) == (S.PipelineReady, False)
    assert state.reason == f"1/1 ready; models not ready: {model} (not loaded)"  # the engines' reason first

    base = f"http://127.0.0.1:{cfg.http_port}/v2"
    # once the output partition is assigned, the only thing missing is the model, and it is named
    wait_until(lambda: model in _get(f"{base}/pipelines/{name}/ready")[1], what="the model named as missing",
               detail=lambda: str(_get(f"{base}/pipelines/{name}/ready")))
    assert _get(f"{base}/pipelines/{name}/ready") == (
        424, f"{name}.pipeline: 1/1 ready; models not ready: {model} (not loaded)")
    assert _get(f"{base}/models/{name}/ready")[0] == 424
    with grpc.insecure_channel(f"127.0.0.1:{cfg.grpc_port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        assert not stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10).ready
    capsys.readouterr()
    assert main(["pipeline", "status", name, "-w", "PipelineReady", "-t", "0.5"]) != 0
    assert f"models not ready: {model} (not loaded)" in capsys.readouterr().err

    loaded = scheduler_pb2.Model(meta=scheduler_pb2.MetaData(name=model))
    loaded.modelSpec.parameters.add(name="endpoint", value="grpc://127.0.0.1:1")
    client.load_model(loaded)  # the pipeline is not reloaded: its readiness follows the model
    assert main(["pipeline", "status", name, "-w", "PipelineReady", "-t", "10"]) == 0
    wait_until(lambda: _get(f"{base}/pipelines/{name}/ready")[0] == 200)
    assert _get(f"{base}/models/{name}/ready")[0] == 200
    with grpc.insecure_channel(f"127.0.0.1:{cfg.grpc_port}") as ch:
        assert pb_grpc.GRPCInferenceServiceStub(ch).ModelReady(pb.ModelReadyRequest(name=name), timeout=10).ready
    state = client.pipeline_status(name)[0].versions[-1].state
    assert (state.pipelineVersion, state.modelsReady, state.reason) == (1, True, "1/1 ready ")

    client.unload_model(model)
    wait_until(lambda: _get(f"{base}/pipelines/{name}/ready")[0] == 424)


OUTER = """
kind: Pipeline
metadata: {{name: {name}}}
spec:
  steps:
    - name: {name}a
    - name: {name}b
  output:
    steps: [{name}a, {name}b]
    stepsJoin: outer
    joinWindowMs: 2000
"""


def test_an_outer_join_partial_answer_is_not_timed_out(kafka, stack):
    """The gateway's own timeout (1 s) is shorter than the output join window (2 s): the pipeline's
    default follows its spec, so the partial answer due at window close reaches the caller."""
    client, svc, cfg, namer = stack
    name = _load(client, kafka, namer, OUTER.format(name=kafka.unique("oj").replace("-", "")))
    pipeline = Resource(name, False)
    # branches side by side, then the window
    wait_until(lambda: svc.gateway.default_timeout(pipeline) == MODEL_TIMEOUT_S + 2.0)
    wait_until(lambda: svc.gateway.ready(pipeline) or "models" in (svc.gateway.not_ready_reason(pipeline) or ""))

    url = f"http://127.0.0.1:{cfg.http_port}/v2/pipelines/{name}/infer"

    def post(params: dict | None = None, headers: dict | None = None) -> tuple[int, str, float]:
        body = {"inputs": [{"name": "a", "datatype": "INT32", "shape": [1], "data": [1]}]}
        if params:
            body["parameters"] = params
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        start = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode(), time.monotonic() - start
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), time.monotonic() - start

    # the stand-in answers when the window closes, with what the branch that answered gave
    with SimulatedPipeline(kafka, namer.pipeline_inputs(name), namer.pipeline_outputs(name), delay_s=2.0):
        status, text, took = post()
        assert status == 200, text
        assert took >= 1.9 and json.loads(text)["outputs"][0]["name"] == "OUT_a"
        # the caller may say otherwise: a shorter wait is a 504, and its pending entry goes
        status, text, took = post({"drop": True}, {"Seldon-Request-Timeout": "0.3"})
        assert (status, took < 1.5) == (504, True) and "within 0.3s" in text, text
        wait_until(lambda: not svc.gateway._pending and not svc.gateway._pending_where, 5)
        status, text, _ = post(headers={"Seldon-Request-Timeout": "soon"})
        assert status == 400 and "seldon-request-timeout must be a number of seconds" in text, text
        # the same over gRPC, as metadata
        req = pb.ModelInferRequest(model_name=name)
        req.inputs.add(name="a", datatype="INT32", shape=[1]).contents.int_contents.append(1)
        req.parameters["drop"].bool_param = True
        with grpc.insecure_channel(f"127.0.0.1:{cfg.grpc_port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(req, metadata=[("seldon-request-timeout", "0.3")], timeout=10)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "within 0.3s" in info.value.details()
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(req, metadata=[("seldon-request-timeout", "-1")], timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        wait_until(lambda: not svc.gateway._pending and not svc.gateway._pending_where, 5)
