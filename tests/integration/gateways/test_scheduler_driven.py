"""Gateways driven by a (fake) scheduler's status streams: models and pipelines come and go at run time."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from chainer_api import chainer_pb2, scheduler_pb2
from dataflow.kafka import TopicNamer
from gateways.model_service import ModelGatewayConfig, ModelGatewayService
from gateways.pipeline_service import PipelineGatewayConfig, PipelineGatewayService
from tests.waiting import wait_until

from . import fake_oip
from .fake_scheduler import model_status, pipeline_status, start_fake_scheduler
from .harness import BackgroundLoop, free_port
from .simulated import SimulatedPipeline


@pytest.fixture(scope="module")
def scheduler():
    port = free_port()
    server, fake = start_fake_scheduler(port)
    yield f"127.0.0.1:{port}", fake
    server.stop(0)


def test_models_follow_the_scheduler(kafka, scheduler):
    address, fake = scheduler
    oip_port = free_port()
    server, _ = fake_oip.start_grpc(oip_port)
    bg = BackgroundLoop()
    namer = TopicNamer(prefix=kafka.unique("sched").replace("-", ""))
    svc = ModelGatewayService(ModelGatewayConfig(settings=kafka.settings, namer=namer, scheduler=address,
                                                 consumer_prefix=kafka.unique("sched")))
    bg.run(svc.start())
    try:
        avail = scheduler_pb2.ModelStatus.ModelAvailable
        fake.models.put(model_status("add10", f"grpc://127.0.0.1:{oip_port}", avail))
        wait_until(lambda: "add10" in svc.gateway.models())
        assert kafka.create_topics(namer.model_inputs("add10"))  # created by the gateway already
        fake.models.put(model_status("add10", f"grpc://127.0.0.1:{oip_port}",
                                     scheduler_pb2.ModelStatus.ModelTerminated))
        wait_until(lambda: "add10" not in svc.gateway.models())
    finally:
        bg.run(svc.stop())
        bg.close()
        server.stop(0)


def test_pipelines_follow_the_scheduler(kafka, scheduler):
    address, fake = scheduler
    namer = TopicNamer(prefix=kafka.unique("schedp").replace("-", ""))
    kafka.create_topics(namer.pipeline_inputs("p"), namer.pipeline_outputs("p"))
    bg = BackgroundLoop()
    cfg = PipelineGatewayConfig(settings=kafka.settings, namer=namer, scheduler=address, http_port=free_port(),
                                grpc_port=free_port(), host="127.0.0.1", timeout_s=10,
                                consumer_prefix=kafka.unique("schedp"))
    svc = PipelineGatewayService(cfg)
    bg.run(svc.start())
    url = f"http://127.0.0.1:{cfg.http_port}/v2/models/p/infer"
    body = json.dumps({"inputs": [{"name": "a", "datatype": "INT32", "shape": [1], "data": [1]}]}).encode()

    def post():
        req = urllib.request.Request(url, data=body, method="POST", headers={"seldon-model": "p.pipeline"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
    try:
        assert post() == 404  # not announced: "pipeline p not found"
        fake.pipelines.put(pipeline_status("p", scheduler_pb2.PipelineVersionState.PipelineReady))
        wait_until(lambda: svc.gateway.pipelines() == ["p"])
        with SimulatedPipeline(kafka, namer.pipeline_inputs("p"), namer.pipeline_outputs("p")):
            assert post() == 200
        fake.pipelines.put(pipeline_status("p", scheduler_pb2.PipelineVersionState.PipelineTerminated))
        wait_until(lambda: svc.gateway.pipelines() == [])
        assert post() == 404
        wait_until(lambda: not svc.gateway.consumers())  # the last pipeline took its consumer along
    finally:
        bg.run(svc.stop())
        bg.close()


@pytest.fixture
def own_scheduler():
    """A scheduler of this test alone: streams of earlier tests cannot take its messages."""
    port = free_port()
    server, fake = start_fake_scheduler(port)
    yield f"127.0.0.1:{port}", fake
    server.stop(0)


def test_pipeline_instructions_are_followed_and_acked(kafka, own_scheduler):
    """The operation decides, not the state: a rebalance Delete of a still-Ready pipeline stops it."""
    address, fake = own_scheduler
    namer = TopicNamer(prefix=kafka.unique("schedi").replace("-", ""))
    kafka.create_topics(namer.pipeline_outputs("q"))
    bg = BackgroundLoop()
    cfg = PipelineGatewayConfig(settings=kafka.settings, namer=namer, scheduler=address, http_port=free_port(),
                                grpc_port=free_port(), host="127.0.0.1", timeout_s=10,
                                consumer_prefix=kafka.unique("schedi"), subscriber="pgw-i")
    svc = PipelineGatewayService(cfg)
    bg.run(svc.start())
    ready = scheduler_pb2.PipelineVersionState.PipelineReady
    ops = scheduler_pb2.PipelineStatusResponse
    op = chainer_pb2.PipelineUpdateMessage
    try:
        fake.pipelines.put(pipeline_status("q", ready, ops.PipelineCreate, timestamp=5, uid="uq"))
        wait_until(lambda: svc.gateway.pipelines() == ["q"])
        a = fake.acks.get(timeout=10)
        assert a.update == op(op=op.Create, pipeline="q", version=1, uid="uq", stream="pgw-i", timestamp=5)
        assert (a.success, a.reason) == (True, "Pipeline q loaded")
        assert any(getattr(s, "isPipelineGateway", False) and s.subscriberName == "pgw-i" for s in fake.subscriptions)

        fake.pipelines.put(pipeline_status("q", ready, ops.PipelineDelete, timestamp=6, uid="uq"))
        wait_until(lambda: svc.gateway.pipelines() == [])
        a = fake.acks.get(timeout=10)
        assert (a.update.op, a.update.timestamp, a.success, a.reason) == (op.Delete, 6, True, "Pipeline q deleted")
    finally:
        bg.run(svc.stop())
        bg.close()
