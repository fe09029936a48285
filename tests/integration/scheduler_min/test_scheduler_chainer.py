"""Scheduler + Chainer servers with fake engines: sharding, rebalancing, status, upgrades, restarts."""
import grpc
import pytest

from chainer_api import chainer_pb2, scheduler_pb2, scheduler_pb2_grpc
from dataflow_testing.fake_engine import FakeEngine
from scheduler_min import convert
from scheduler_min.server import SchedulerConfig, run_in_thread
from tests.waiting import wait_until

S = scheduler_pb2.PipelineVersionState

PIPE = """
kind: Pipeline
metadata: {{name: {name}}}
spec:
  steps:
    - name: {name}-m1
    - name: {name}-m2
      inputs: [{name}-m1]
  output:
    steps: [{name}-m2]
"""


def pipeline(name):
    return convert.pipelines_from_yaml(PIPE.format(name=name))[0]


@pytest.fixture
def sched(tmp_path):
    s = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", state_dir=str(tmp_path)))
    yield s
    s.stop()


@pytest.fixture
def stub(sched):
    ch = grpc.insecure_channel(sched.address)
    yield scheduler_pb2_grpc.SchedulerStub(ch)
    ch.close()


@pytest.fixture
def engines():
    made = []

    def make(address, name, **kw):
        e = FakeEngine(address, name, **kw)
        made.append(e)
        return e
    yield make
    for e in made:
        e.close()


def status(stub, name, all_versions=False):
    (res,) = list(stub.PipelineStatus(scheduler_pb2.PipelineStatusRequest(
        subscriberName="t", name=name, allVersions=all_versions), timeout=5))
    return res


def state(stub, name):
    v = status(stub, name).versions[-1]
    return S.PipelineStatus.Name(v.state.status), v.state.reason


def wait_state(stub, name, want, timeout=10):
    return wait_until(lambda: state(stub, name)[0] == want, timeout, what=f"{name} {want} (now {state(stub, name)})")


def test_load_without_engines_then_engine_connects(sched, stub, engines):
    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("a")), timeout=5)
    assert state(stub, "a") == ("PipelineCreate", "no dataflow engines available to handle pipeline")
    e = engines(sched.chainer_address, "engine-0")
    wait_state(stub, "a", "PipelineReady")
    # the engines' reason, then what still keeps it from answering: its models were never loaded
    assert state(stub, "a")[1] == "1/1 ready; models not ready: a-m1 (not loaded), a-m2 (not loaded)"
    (create,) = [m for m in e.messages if m.pipeline == "a"]
    assert create.op == chainer_pb2.PipelineUpdateMessage.Create and create.timestamp >= 1
    v = status(stub, "a").versions[0]
    assert v.pipeline.uid == create.uid and v.pipeline.version == 1
    assert [s.name for s in v.pipeline.steps] == ["a-m1", "a-m2"]


def test_invalid_and_unknown_pipeline_errors(sched, stub):
    bad = pipeline("b")
    bad.steps[1].inputs[:] = ["nope"]
    with pytest.raises(grpc.RpcError) as info:
        stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=bad), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "pipeline b step b-m2 has input nope for step that does not exist"
    with pytest.raises(grpc.RpcError) as info:
        status(stub, "ghost")
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.NOT_FOUND, "pipeline ghost not found")
    with pytest.raises(grpc.RpcError) as info:
        stub.UnloadPipeline(scheduler_pb2.UnloadPipelineRequest(name="ghost"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stub.StartExperiment(scheduler_pb2.StartExperimentRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_sharding_over_two_engines_and_disconnect_moves_pipelines(sched, stub, engines):
    e1 = engines(sched.chainer_address, "engine-1")
    e2 = engines(sched.chainer_address, "engine-2")
    wait_until(lambda: sched.call(lambda: len(sched.app.chainer.streams)) == 2, what="two engines")
    names = [f"p{i}" for i in range(16)]
    for n in names:
        stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline(n)), timeout=5)
    for n in names:
        wait_state(stub, n, "PipelineReady")
    on1, on2 = e1.running_pipelines(), e2.running_pipelines()
    assert on1 | on2 == set(names)
    assert not on1 & on2  # one replica per pipeline
    assert on1 and on2    # both engines got work (16 pipelines over 2 engines: all on one has p ~ 3e-5)
    e1.close()
    wait_until(lambda: e2.running_pipelines() == set(names), what="all pipelines on engine-2")
    for n in names:
        wait_state(stub, n, "PipelineReady")


def test_failed_create_and_status_aggregation(sched, stub, engines):
    engines(sched.chainer_address, "engine-bad", succeed=False)
    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("f")), timeout=5)
    wait_state(stub, "f", "PipelineFailed")
    assert state(stub, "f")[1].startswith("1/1 failed ")


def test_stale_acks_are_ignored(sched, stub, engines):
    e = engines(sched.chainer_address, "engine-manual", auto_ack=False)
    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("s")), timeout=5)
    create = wait_until(lambda: [m for m in e.messages if m.pipeline == "s"], what="create")[0]
    stale = chainer_pb2.PipelineUpdateMessage()
    stale.CopyFrom(create)
    stale.timestamp = create.timestamp + 5
    e.ack(stale, True)
    assert state(stub, "s")[0] == "PipelineCreating"
    e.ack(create, True)
    wait_state(stub, "s", "PipelineReady")
    # engine reports a rebalance, then ready again (asynchronous state reports)
    e.ack(create, True, op=chainer_pb2.PipelineUpdateMessage.Rebalance)
    wait_state(stub, "s", "PipelineRebalancing")
    e.ack(create, True, op=chainer_pb2.PipelineUpdateMessage.Ready)
    wait_state(stub, "s", "PipelineReady")


def test_unload_and_version_upgrade(sched, stub, engines):
    e = engines(sched.chainer_address, "engine-u")
    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("u")), timeout=5)
    wait_state(stub, "u", "PipelineReady")
    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("u")), timeout=5)
    wait_until(lambda: [S.PipelineStatus.Name(v.state.status) for v in status(stub, "u", True).versions]
             == ["PipelineTerminated", "PipelineReady"], what="v1 terminated, v2 ready")
    v1, v2 = status(stub, "u", True).versions
    assert v1.pipeline.uid != v2.pipeline.uid and v2.pipeline.version == 2
    assert e.ops("u") == [("Create", 1), ("Create", 2), ("Delete", 1)]
    stub.UnloadPipeline(scheduler_pb2.UnloadPipelineRequest(name="u"), timeout=5)
    wait_state(stub, "u", "PipelineTerminated")
    assert e.ops("u")[-1] == ("Delete", 2)
    with pytest.raises(grpc.RpcError) as info:
        stub.UnloadPipeline(scheduler_pb2.UnloadPipelineRequest(name="u"), timeout=5)
    assert info.value.details() == "pipeline u not found"


def test_subscribe_pipeline_status_streams_updates(sched, stub, engines):
    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("w")), timeout=5)
    call = stub.SubscribePipelineStatus(scheduler_pb2.PipelineSubscriptionRequest(subscriberName="t"), timeout=10)
    seen = []
    engines(sched.chainer_address, "engine-w")
    for res in call:
        seen.append(S.PipelineStatus.Name(res.versions[0].state.status))
        if seen[-1] == "PipelineReady":
            break
    call.cancel()
    assert seen[0] == "PipelineCreate" and "PipelineCreating" in seen


def test_models_load_status_subscribe_unload(sched, stub):
    m = scheduler_pb2.Model(meta=scheduler_pb2.MetaData(name="iris"),
                            modelSpec=scheduler_pb2.ModelSpec(uri="gs://bucket/iris"))
    with pytest.raises(grpc.RpcError) as info:
        stub.LoadModel(scheduler_pb2.LoadModelRequest(model=m), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "has no endpoint" in info.value.details()
    m.modelSpec.parameters.add(name="endpoint", value="grpc://127.0.0.1:9500")
    stub.LoadModel(scheduler_pb2.LoadModelRequest(model=m), timeout=5)
    (res,) = list(stub.ModelStatus(scheduler_pb2.ModelStatusRequest(
        subscriberName="t", model=scheduler_pb2.ModelReference(name="iris")), timeout=5))
    v = res.versions[0]
    assert v.state.state == scheduler_pb2.ModelStatus.ModelAvailable
    assert {p.name: p.value for p in v.modelDefn.modelSpec.parameters}["endpoint"] == "grpc://127.0.0.1:9500"
    call = stub.SubscribeModelStatus(scheduler_pb2.ModelSubscriptionRequest(subscriberName="gw"), timeout=10)
    first = next(call)
    assert first.modelName == "iris"
    stub.UnloadModel(scheduler_pb2.UnloadModelRequest(model=scheduler_pb2.ModelReference(name="iris")), timeout=5)
    second = next(call)
    call.cancel()
    assert second.deleted and second.versions[0].state.state == scheduler_pb2.ModelStatus.ModelTerminated
    assert stub.SchedulerStatus(scheduler_pb2.SchedulerStatusRequest(), timeout=5).applicationVersion


def test_restart_restores_pipelines_and_models(tmp_path, engines):
    cfg = SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", state_dir=str(tmp_path))
    s1 = run_in_thread(cfg)
    ch = grpc.insecure_channel(s1.address)
    stub = scheduler_pb2_grpc.SchedulerStub(ch)
    e = engines(s1.chainer_address, "engine-r")
    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("r")), timeout=5)
    m = scheduler_pb2.Model(meta=scheduler_pb2.MetaData(name="r-m1"),
                            modelSpec=scheduler_pb2.ModelSpec(uri="http://127.0.0.1:9000"))
    stub.LoadModel(scheduler_pb2.LoadModelRequest(model=m), timeout=5)
    wait_state(stub, "r", "PipelineReady")
    uid = status(stub, "r").versions[0].pipeline.uid
    ch.close()
    e.close()
    s1.stop()

    cfg.port = cfg.chainer_port = 0
    s2 = run_in_thread(cfg)
    try:
        ch = grpc.insecure_channel(s2.address)
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        assert state(stub, "r") == ("PipelineCreate", "no dataflow engines available to handle pipeline")
        assert status(stub, "r").versions[0].pipeline.uid == uid
        e2 = engines(s2.chainer_address, "engine-r")
        wait_state(stub, "r", "PipelineReady")
        assert ("Create", 1) in e2.ops("r")
        (res,) = list(stub.ModelStatus(scheduler_pb2.ModelStatusRequest(
            subscriberName="t", model=scheduler_pb2.ModelReference(name="r-m1")), timeout=5))
        assert res.versions[0].state.state == scheduler_pb2.ModelStatus.ModelAvailable
        ch.close()
    finally:
        s2.stop()


def test_health_check_on_both_ports(sched):
    for address in (sched.address, sched.chainer_address):
        with grpc.insecure_channel(address) as ch:
            call = ch.unary_unary("/seldon.mlops.health.HealthCheckService/HealthCheck",
                                  request_serializer=lambda b: b, response_deserializer=lambda b: b)
            assert call(b"", timeout=5) == b"\x08\x01"


def test_status_updates_end_with_the_latest_version_during_upgrade(sched, stub, engines):
    engines(sched.chainer_address, "engine-up")
    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("up")), timeout=5)
    wait_state(stub, "up", "PipelineReady")
    call = stub.SubscribePipelineStatus(scheduler_pb2.PipelineSubscriptionRequest(subscriberName="gw"), timeout=10)
    next(call)  # current state
    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("up")), timeout=5)
    updates = []
    for res in call:
        updates.append([(v.state.pipelineVersion, S.PipelineStatus.Name(v.state.status)) for v in res.versions])
        if updates[-1][0] == (1, "PipelineTerminated"):
            break
    call.cancel()
    assert all(u[-1][0] == 2 for u in updates)  # the live (latest) version is always last
    assert updates[-1] == [(1, "PipelineTerminated"), (2, "PipelineReady")]


def test_failed_create_is_retried_until_it_succeeds(tmp_path, engines):
    s = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", retry_failed_secs=0.5,
                                      max_retry_failed=10))
    try:
        with grpc.insecure_channel(s.address) as ch:
            stub = scheduler_pb2_grpc.SchedulerStub(ch)
            e = engines(s.chainer_address, "engine-flaky", succeed=False)
            stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("rt")), timeout=5)
            wait_until(lambda: len(e.ops("rt")) >= 2, what="a retried create")
            e.succeed = True
            wait_state(stub, "rt", "PipelineReady")
            assert len(e.ops("rt")) <= 11  # first try + at most 10 retries
    finally:
        s.stop()


def test_two_replicas_per_pipeline_aggregate_acks(engines):
    s = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", max_shard_count_multiplier=2))
    try:
        with grpc.insecure_channel(s.address) as ch:
            stub = scheduler_pb2_grpc.SchedulerStub(ch)
            a = engines(s.chainer_address, "engine-a", auto_ack=False)
            b = engines(s.chainer_address, "engine-b", auto_ack=False)
            wait_until(lambda: s.call(lambda: len(s.app.chainer.streams)) == 2, what="two engines")
            stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("two")), timeout=5)
            ca = wait_until(lambda: [m for m in a.messages if m.pipeline == "two"], what="create on a")[-1]
            cb = wait_until(lambda: [m for m in b.messages if m.pipeline == "two"], what="create on b")[-1]
            a.ack(ca, True)
            wait_until(lambda: state(stub, "two") == ("PipelineCreating", "1/2 ready "), what="1/2 ready")
            b.ack(cb, False)
            wait_until(lambda: state(stub, "two")[0] == "PipelineReady", what="ready with one failed replica")
            assert state(stub, "two")[1].startswith("1/2 ready 1/2 failed ")
    finally:
        s.stop()


def test_terminating_without_engines_after_restart_becomes_terminated(tmp_path, engines):
    cfg = SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", state_dir=str(tmp_path))
    s = run_in_thread(cfg)
    with grpc.insecure_channel(s.address) as ch:
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        e = engines(s.chainer_address, "engine-t", auto_ack=False)
        stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("t")), timeout=5)
        create = wait_until(lambda: [m for m in e.messages if m.pipeline == "t"], what="create")[-1]
        e.ack(create, True)
        wait_state(stub, "t", "PipelineReady")
        stub.UnloadPipeline(scheduler_pb2.UnloadPipelineRequest(name="t"), timeout=5)
        wait_state(stub, "t", "PipelineTerminating")  # engine never acks the Delete
    e.close()
    s.stop()
    s = run_in_thread(cfg)
    try:
        with grpc.insecure_channel(s.address) as ch:
            stub = scheduler_pb2_grpc.SchedulerStub(ch)
            assert state(stub, "t") == ("PipelineTerminated", "no dataflow engines available to handle pipeline")
    finally:
        s.stop()


def test_graceful_stop_keeps_persisted_states(tmp_path, engines):
    from scheduler_min.store import Store

    s = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", state_dir=str(tmp_path)))
    with grpc.insecure_channel(s.address) as ch:
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        engines(s.chainer_address, "engine-g")
        stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("g")), timeout=5)
        wait_state(stub, "g", "PipelineReady")
    s.stop()
    assert Store(str(tmp_path)).pipelines["g"][-1].status == S.PipelineReady
