"""Many pipelines in one pipeline gateway, and requests for resources it does not serve.

The gateway follows a (fake) scheduler. What is checked:

* Loading N pipelines costs one consumer per consumer-group bucket in use (a single consumer when
  all names share one bucket), not one per pipeline; unloading them all gives back every
  Kafka client thread and Python thread.
* A request naming a pipeline or model the scheduler never announced is answered 404 /
  NOT_FOUND at once and leaves nothing behind (no subscription, no consumer, no pending entry),
  and a crowd of such requests does not hold up a request for a real pipeline.

Thread counts are read from ``/proc/self/task``: librdkafka names its native threads ``rdk:*``.
"""
from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from chainer_api import scheduler_pb2
from dataflow.kafka import TopicNamer
from gateways.pipeline_service import PipelineGatewayConfig, PipelineGatewayService
from tests.waiting import wait_until

from .fake_scheduler import model_status, pipeline_status, start_fake_scheduler
from .harness import BackgroundLoop, free_port
from .simulated import SimulatedPipeline

N = 20
READY = scheduler_pb2.PipelineVersionState.PipelineReady
TERMINATED = scheduler_pb2.PipelineVersionState.PipelineTerminated
BODY = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}]}).encode()


def rdkafka_threads() -> int:
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                n += f.read().startswith("rdk:")
        except OSError:  # the thread ended while listing
            pass
    return n


def gateway_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("pipelinegw-"))


class Gateway:
    """A pipeline gateway service following a fake scheduler, on a background loop."""

    def __init__(self, kafka, namer: TopicNamer, **config) -> None:
        self.sched_port = free_port()
        self.sched_server, self.scheduler = start_fake_scheduler(self.sched_port)
        self.cfg = PipelineGatewayConfig(settings=kafka.settings, namer=namer, scheduler=f"127.0.0.1:{self.sched_port}",
                                         http_port=free_port(), grpc_port=free_port(), host="127.0.0.1",
                                         timeout_s=20.0, consumer_prefix=kafka.unique("many"), **config)
        self.bg = BackgroundLoop()
        self.svc = PipelineGatewayService(self.cfg)
        self.bg.run(self.svc.start())
        self.gw = self.svc.gateway
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.cfg.grpc_port}")
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.bg.run(self.svc.stop())
        self.bg.close()
        self.sched_server.stop(0)

    def announce(self, names, status=READY) -> None:
        for n in names:
            self.scheduler.pipelines.put(pipeline_status(n, status))

    def post(self, seldon_model: str | None, path: str = "/v2/models/x/infer", timeout: float = 30):
        headers = {"Content-Type": "application/json"}
        if seldon_model is not None:
            headers["seldon-model"] = seldon_model
        req = urllib.request.Request(f"http://127.0.0.1:{self.cfg.http_port}{path}", data=BODY, method="POST",
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def grpc_infer(self, seldon_model: str, timeout: float = 30):
        req = pb.ModelInferRequest()
        t = req.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 2])
        t.contents.int_contents.extend([1, 2])
        return self.stub.ModelInfer(req, metadata=[("seldon-model", seldon_model)], timeout=timeout)

    def settled(self) -> bool:
        """No consumer running or stopping, nothing loaded, nothing waiting."""
        gw = self.gw
        return not gw.consumers() and not gw._stopping and not gw._loaded and not gw._pending


@pytest.fixture(scope="module")
def pipelines(kafka):
    """N pipelines' topics and one simulated engine answering all of them."""
    namer = TopicNamer(prefix=kafka.unique("many").replace("-", ""))
    names = [f"many-{i}" for i in range(N)]
    kafka.create_topics(*[t for n in names for t in (namer.pipeline_inputs(n), namer.pipeline_outputs(n))],
                        namer.model_inputs("known-model"), namer.model_outputs("known-model"))
    routes = {namer.pipeline_inputs(n): namer.pipeline_outputs(n) for n in names}
    routes[namer.model_inputs("known-model")] = namer.model_outputs("known-model")
    with SimulatedPipeline(kafka, routes=routes):
        yield namer, names


def _warm_up(g: Gateway) -> None:
    """Exercise REST, gRPC and one load/unload cycle so lazily started threads exist before a baseline."""
    assert g.post("warm.pipeline")[0] == 404
    with pytest.raises(grpc.RpcError):
        g.grpc_infer("warm.pipeline")


def _load_serve_unload(g: Gateway, names: list[str]) -> dict:
    _warm_up(g)
    base_rdk, base_py = rdkafka_threads(), gateway_threads()
    g.announce(names)
    wait_until(lambda: g.gw.pipelines() == sorted(names), what="pipelines announced")
    groups = {g.gw.group_id(n) for n in names}
    assert set(g.gw.consumers()) == groups  # one consumer per bucket in use, none per pipeline
    for n in names[:3]:
        status, body = g.post(f"{n}.pipeline")
        assert status == 200, body
    assert list(g.grpc_infer(f"{names[-1]}.pipeline").outputs[0].contents.int_contents) == [1, 2]
    loaded = {"consumers": len(g.gw.consumers()), "rdk": rdkafka_threads() - base_rdk,
              "py": gateway_threads() - base_py}
    g.announce(names, TERMINATED)
    wait_until(lambda: g.gw.pipelines() == [], what="pipelines unloaded")
    wait_until(g.settled, what="consumers stopped")
    wait_until(lambda: rdkafka_threads() <= base_rdk and gateway_threads() <= base_py, what="threads released")
    assert g.post(f"{names[0]}.pipeline", timeout=10)[0] == 404
    return loaded


@pytest.mark.timeout(180)
def test_one_consumer_for_all_pipelines_released_on_unload(kafka, pipelines):
    namer, names = pipelines
    g = Gateway(kafka, namer, max_num_consumers=1)
    try:
        loaded = _load_serve_unload(g, names)
        assert loaded["consumers"] == 1 and loaded["py"] == 1
        assert 0 < loaded["rdk"] <= 8, loaded  # one librdkafka client (~4 threads), not N of them
    finally:
        g.close()


@pytest.mark.timeout(180)
def test_reference_buckets_one_consumer_per_bucket_in_use(kafka, pipelines):
    """The reference's group layout (100 hashed buckets) still works: consumers = buckets in use."""
    namer, names = pipelines
    g = Gateway(kafka, namer, max_num_consumers=100)
    try:
        buckets = len({g.gw.group_id(n) for n in names})
        loaded = _load_serve_unload(g, names)
        assert loaded["consumers"] == buckets and loaded["py"] == buckets
        assert loaded["rdk"] <= 8 * buckets, loaded
    finally:
        g.close()


@pytest.fixture(scope="module")
def served(kafka, pipelines):
    """A gateway serving pipeline many-0 and model known-model (both announced by the scheduler)."""
    namer, names = pipelines
    g = Gateway(kafka, namer)
    g.announce(names[:1])
    g.scheduler.models.put(model_status("known-model", "grpc://127.0.0.1:1", scheduler_pb2.ModelStatus.ModelAvailable))
    wait_until(lambda: g.gw.pipelines() == names[:1] and "known-model" in g.gw._known_models, what="announcements")
    assert g.post(f"{names[0]}.pipeline")[0] == 200
    try:
        yield g, names[0]
    finally:
        g.close()


UNKNOWN_REST = [("bogus.model", "/v2/models/bogus/infer"), ("bogus", "/v2/models/bogus/infer"),
                ("bogus.pipeline", "/v2/models/bogus/infer"), (None, "/v2/pipelines/bogus/infer")]


@pytest.mark.timeout(30)
def test_unknown_resources_are_404_at_once_and_leave_nothing(served):
    g, _known = served
    consumers, loaded = g.gw.consumers(), dict(g.gw._loaded)
    for header, path in UNKNOWN_REST:
        status, body = g.post(header, path, timeout=5)
        assert status == 404, (header, path, body)
        assert b"not found" in body
    for header in ("bogus.model", "bogus", "bogus.pipeline"):
        with pytest.raises(grpc.RpcError) as err:
            g.grpc_infer(header, timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, header
    assert g.gw.consumers() == consumers and g.gw._loaded == loaded
    assert not g.gw._pending
    assert all(not c.topics - {g.cfg.namer.pipeline_outputs(_known)} for c in consumers.values())
    # no per-name metric series for names nobody serves
    assert g.gw.metrics.registry.get_sample_value(
        "seldon_pipeline_infer_total", {"server": "pipeline-gateway", "pipeline": "bogus", "method_type": "rest",
                                        "code": "404"}) is None


@pytest.mark.timeout(60)
def test_model_call_served_only_once_announced(served):
    g, _known = served
    status, body = g.post("known-model.model")
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == [1, 2]
    g.scheduler.models.put(model_status("known-model", "grpc://127.0.0.1:1", scheduler_pb2.ModelStatus.ModelTerminated))
    wait_until(lambda: "known-model" not in g.gw._known_models, what="model removed")
    assert g.post("known-model.model", timeout=5)[0] == 404
    assert all(g.cfg.namer.model_outputs("known-model") not in c.topics for c in g.gw.consumers().values())


@pytest.mark.timeout(60)
def test_many_unknown_requests_do_not_delay_a_known_one(served):
    g, known = served
    consumers = g.gw.consumers()

    def unknown(i):
        header = f"bogus-{i}.model" if i % 2 else f"bogus-{i}.pipeline"
        return g.post(header, timeout=5)[0]

    with ThreadPoolExecutor(max_workers=64) as pool:
        crowd = [pool.submit(unknown, i) for i in range(200)]
        # the known request runs while the crowd is in flight; its own timeout (well under the
        # 10 s partition wait a subscription to a made-up topic used to cost) bounds any delay
        mine = [pool.submit(g.post, f"{known}.pipeline", "/v2/models/x/infer", 8) for _ in range(3)]
        assert [f.result()[0] for f in mine] == [200, 200, 200]
        assert [f.result() for f in crowd] == [404] * 200
    assert g.gw.consumers() == consumers and not g.gw._pending
