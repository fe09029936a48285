"""Gateways ack the minimal scheduler's instructions over Kafka, and the CLI shows gateway readiness.

scheduler_min runs in-process, a fake engine stands in for the dataflow engines (their status is
not the point here), the pipeline / model gateways are the real services on the embedded broker.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from chainer_api import scheduler_pb2
from dataflow.kafka import TopicNamer
from dataflow_cli import main
from dataflow_testing.fake_engine import FakeEngine
from gateways.model_service import ModelGatewayConfig, ModelGatewayService
from gateways.pipeline_service import PipelineGatewayConfig, PipelineGatewayService
from scheduler_min import convert
from scheduler_min.client import SchedulerClient
from scheduler_min.server import SchedulerConfig, run_in_thread
from tests.waiting import wait_until

from . import fake_oip
from .harness import BackgroundLoop, free_port
from .simulated import SimulatedPipeline

S = scheduler_pb2.PipelineVersionState
M = scheduler_pb2.ModelStatus


@pytest.fixture
def sched(tmp_path):
    s = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", state_dir=str(tmp_path / "st")))
    engine = FakeEngine(s.chainer_address, "engine-acks")
    yield s
    engine.close()
    s.stop()


@pytest.fixture
def cli_env(sched, monkeypatch, tmp_path):
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(tmp_path / "no-config.json"))
    monkeypatch.setenv("SELDON_SCHEDULE_HOST", sched.address)


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    return out


def _latest(client, name):
    return client.pipeline_status(name)[0].versions[-1].state


def test_pipeline_gateway_ack_reaches_scheduler_and_cli_shows_it(kafka, sched, cli_env, capsys):
    name = kafka.unique("ackp").replace("-", "")
    namer = TopicNamer(prefix=kafka.unique("acks").replace("-", ""))
    kafka.create_topics(namer.pipeline_inputs(name), namer.pipeline_outputs(name))
    client = SchedulerClient(sched.address)
    bg = BackgroundLoop()
    cfg = PipelineGatewayConfig(settings=kafka.settings, namer=namer, scheduler=sched.address,
                                http_port=free_port(), grpc_port=free_port(), host="127.0.0.1", timeout_s=10,
                                consumer_prefix=kafka.unique("acks"), subscriber="pgw-under-test")
    svc = PipelineGatewayService(cfg)
    try:
        # loaded before any gateway: the gateway status says nobody serves it
        client.load_pipeline(convert.pipelines_from_yaml(
            f"kind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n  steps:\n    - name: m1\n")[0])
        wait_until(lambda: _latest(client, name).status == S.PipelineReady)
        st = _latest(client, name)
        assert (st.pipelineGwStatus, st.pipelineGwReason) == (S.PipelineCreate,
                                                              "No pipeline gateway available to handle pipeline")

        bg.run(svc.start())  # subscribing triggers a Create, which the gateway acks
        wait_until(lambda: _latest(client, name).pipelineGwStatus == S.PipelineReady)
        assert _latest(client, name).pipelineGwReason == "1/1 ready "
        assert svc.gateway.pipelines() == [name]

        url = f"http://127.0.0.1:{cfg.http_port}/v2/models/{name}/infer"
        body = json.dumps({"inputs": [{"name": "a", "datatype": "INT32", "shape": [1], "data": [1]}]}).encode()
        with SimulatedPipeline(kafka, namer.pipeline_inputs(name), namer.pipeline_outputs(name)):
            req = urllib.request.Request(url, data=body, method="POST", headers={"seldon-model": f"{name}.pipeline"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200

        doc = json.loads(_cli(capsys, "pipeline", "status", name))
        state = doc["versions"][0]["state"]
        assert (state["status"], state["pipelineGwStatus"], state["pipelineGwReason"]) == (
            "PipelineReady", "PipelineReady", "1/1 ready ")
        text = _cli(capsys, "pipeline", "status", name, "-o", "text").splitlines()
        assert text[0].split() == ["pipeline", "version", "state", "gateway", "models-ready", "reason"]
        assert text[2].split()[:4] == [name, "1", "PipelineReady", "PipelineReady"]
        assert "gateway: 1/1 ready" in text[2]
        listing = _cli(capsys, "pipeline", "list").splitlines()
        assert any(line.split()[:3] == [name, "PipelineReady", "PipelineReady"] for line in listing[2:])

        client.unload_pipeline(name)  # Delete to the gateway, acked: it stops serving the name
        wait_until(lambda: _latest(client, name).pipelineGwStatus == S.PipelineTerminated)
        assert svc.gateway.pipelines() == []
        req = urllib.request.Request(url, data=body, method="POST", headers={"seldon-model": f"{name}.pipeline"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=30)
        assert info.value.code == 404
    finally:
        bg.run(svc.stop())
        bg.close()
        client.close()


def test_model_gateway_ack_reaches_scheduler(kafka, sched, cli_env, capsys):
    name = kafka.unique("ackm").replace("-", "")
    oip_port = free_port()
    server, _ = fake_oip.start_grpc(oip_port)
    client = SchedulerClient(sched.address)
    bg = BackgroundLoop()
    namer = TopicNamer(prefix=kafka.unique("ackm").replace("-", ""))
    svc = ModelGatewayService(ModelGatewayConfig(settings=kafka.settings, namer=namer, scheduler=sched.address,
                                                 consumer_prefix=kafka.unique("ackm"), subscriber="mgw-under-test"))
    try:
        bg.run(svc.start())
        model = scheduler_pb2.Model(meta=scheduler_pb2.MetaData(name=name))
        model.modelSpec.parameters.add(name="endpoint", value=f"grpc://127.0.0.1:{oip_port}")
        client.load_model(model)

        def gw_state():
            return client.model_status(name)[0].versions[-1].state

        wait_until(lambda: gw_state().modelGwState == M.ModelAvailable)
        assert gw_state().modelGwReason == "1/1 ready "
        assert name in svc.gateway.models()
        doc = json.loads(_cli(capsys, "model", "status", name))
        assert doc["versions"][0]["state"]["modelGwState"] == "ModelAvailable"

        client.unload_model(name)
        wait_until(lambda: gw_state().modelGwState == M.ModelTerminated)
        assert name not in svc.gateway.models()
    finally:
        bg.run(svc.stop())
        bg.close()
        client.close()
        server.stop(0)


def test_control_plane_asks_for_resources_and_server_notify_is_accepted(sched):
    import grpc

    from chainer_api import scheduler_pb2_grpc

    with grpc.insecure_channel(sched.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        call = stub.SubscribeControlPlane(scheduler_pb2.ControlPlaneSubscriptionRequest(subscriberName="op"),
                                          timeout=10)
        E = scheduler_pb2.ControlPlaneResponse
        events = [next(call).event for _ in range(4)]
        call.cancel()
        assert events == [E.SEND_SERVERS, E.SEND_EXPERIMENTS, E.SEND_MODELS, E.SEND_PIPELINES]
        stub.ServerNotify(scheduler_pb2.ServerNotifyRequest(
            servers=[scheduler_pb2.ServerNotify(name="mlserver", expectedReplicas=1)], isFirstSync=True), timeout=10)
