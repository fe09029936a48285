"""Hash ring, ack aggregation and the persisted store, without servers."""
import pytest

from chainer_api import chainer_pb2, scheduler_pb2
from scheduler_min import convert
from scheduler_min.conflicts import ConflictResolver, ack_status
from scheduler_min.hashring import HashRing
from scheduler_min.ids import new_uid
from scheduler_min.store import ConflictError, NotFoundError, StateError, Store

S = scheduler_pb2.PipelineVersionState
OP = chainer_pb2.PipelineUpdateMessage


def test_ring_replicas_and_stability():
    ring = HashRing(replicas=1)
    assert ring.servers_for("k") == []
    for s in ("e1", "e2", "e3"):
        ring.add(s)
    keys = [new_uid() for _ in range(300)]
    before = {k: ring.servers_for(k)[0] for k in keys}
    assert set(before.values()) == {"e1", "e2", "e3"}
    ring.add("e4")
    after = {k: ring.servers_for(k)[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == "e4" for k in moved)  # only keys the new engine takes move
    assert 0 < len(moved) < len(keys) // 2
    ring.remove("e4")
    assert {k: ring.servers_for(k)[0] for k in keys} == before
    two = HashRing(replicas=2)
    two.add("a")
    assert two.servers_for("k") == ["a"]
    two.add("b")
    assert sorted(two.servers_for("k")) == ["a", "b"]


def test_conflicts_clock_and_aggregation():
    cr = ConflictResolver()
    ts = cr.new_iteration("u", ["e1", "e2"])
    assert cr.is_outdated("u", ts + 1, "e1") and cr.is_outdated("u", ts, "e9") and not cr.is_outdated("u", ts, "e1")
    cr.update("u", "e1", ack_status(OP.Create, True))
    assert cr.aggregate("u", OP.Create) == (S.PipelineCreating, "1/2 ready ")
    cr.update("u", "e2", ack_status(OP.Create, False))
    assert cr.aggregate("u", OP.Create) == (S.PipelineReady, "1/2 ready 1/2 failed ")
    cr.new_iteration("u", ["e1"])
    cr.update("u", "e1", ack_status(OP.Delete, True))
    assert cr.aggregate("u", OP.Delete) == (S.PipelineTerminated, "1/1 terminated ")
    cr.update("u", "e1", ack_status(OP.Rebalance, True))
    assert cr.aggregate("u", OP.Rebalance) == (S.PipelineRebalancing, "1/1 rebalancing ")
    cr.update("u", "e1", ack_status(OP.Delete, False))
    assert cr.aggregate("u", OP.Delete)[0] == S.PipelineFailedTerminating


PIPE = "kind: Pipeline\nmetadata: {name: p}\nspec:\n  steps:\n    - name: m\n"


def proto():
    return convert.pipelines_from_yaml(PIPE)[0]


def test_store_versions_upgrade_and_persistence(tmp_path):
    st = Store(str(tmp_path))
    r1 = st.add_pipeline(proto())
    assert (r1.pv.version, r1.status) == (1, S.PipelineCreate)
    r2 = st.add_pipeline(proto())
    assert r2.pv.version == 2 and r2.pv.uid != r1.pv.uid
    st.set_state(r1, S.PipelineReady, "1/1 ready ")
    old = st.set_state(r2, S.PipelineReady, "1/1 ready ")
    assert old == [r1] and r1.status == S.PipelineTerminate
    again = Store(str(tmp_path))
    assert [(r.pv.version, r.pv.uid, r.status) for r in again.pipelines["p"]] == [
        (1, r1.pv.uid, S.PipelineTerminate), (2, r2.pv.uid, S.PipelineReady)]
    # the engines' reason as stored; model m was never loaded, so the status also says so
    assert again.pipelines["p"][1].reason == "1/1 ready "
    assert again.pipeline_status("p", all_versions=True).versions[1].state.reason == \
        "1/1 ready; models not ready: m (not loaded)"


def test_store_remove_and_recreate(tmp_path):
    st = Store(None)
    with pytest.raises(NotFoundError):
        st.remove_pipeline("p")
    r = st.add_pipeline(proto())
    st.remove_pipeline("p")
    with pytest.raises(ConflictError) as info:
        st.remove_pipeline("p")
    assert str(info.value) == "pipeline p still terminating"
    st.set_state(r, S.PipelineTerminated, "")
    with pytest.raises(ConflictError):  # the pipeline gateways have not finished yet
        st.remove_pipeline("p")
    st.set_gw_state(r, S.PipelineTerminated, "")
    with pytest.raises(NotFoundError):
        st.remove_pipeline("p")
    assert st.add_pipeline(proto()).pv.version == 1  # re-created after termination starts again


def test_same_k8s_generation_is_ignored():
    st = Store(None)
    p = proto()
    p.kubernetesMeta.generation = 3
    assert st.add_pipeline(p) is not None
    assert st.add_pipeline(p) is None
    p.kubernetesMeta.generation = 4
    assert st.add_pipeline(p).pv.version == 2


def test_models_ready_follows_models():
    from scheduler_min.models import resolve_endpoint

    st = Store(None)
    r = st.add_pipeline(proto())
    st.set_state(r, S.PipelineReady, "")
    assert not st.models_ready(r)
    state = st.pipeline_status("p").versions[0].state
    assert (state.status, state.modelsReady, state.reason) == (S.PipelineReady, False,
                                                               "models not ready: m (not loaded)")
    m = scheduler_pb2.Model(meta=scheduler_pb2.MetaData(name="m"), modelSpec=scheduler_pb2.ModelSpec(uri="grpc://h:1"))
    st.add_model(resolve_endpoint(m))
    assert st.models_ready(r)
    state = st.pipeline_status("p").versions[0].state
    assert (state.status, state.modelsReady, state.reason) == (S.PipelineReady, True, "")
    st.models["m"][-1].state = scheduler_pb2.ModelStatus.ModelFailed
    assert st.pipeline_status("p").versions[0].state.reason == "models not ready: m (ModelFailed)"
    st.remove_model("m")
    assert not st.models_ready(r)
    st.remove_pipeline("p")  # a version not running says what the engines say
    assert st.pipeline_status("p").versions[0].state.reason == "pipeline removed"


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    (tmp_path / "scheduler-state.json").write_text("{not json")
    with pytest.raises(StateError) as info:
        Store(str(tmp_path))
    assert "cannot read scheduler state" in str(info.value)


@pytest.mark.parametrize("params,uri,expected", [
    ([("endpoint", "grpc://127.0.0.1:9500")], "gs://x", "grpc://127.0.0.1:9500"),
    ([], "http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ([], "gs://x", None),
])
def test_model_endpoint(params, uri, expected):
    from scheduler_min.models import model_endpoint

    m = scheduler_pb2.Model(modelSpec=scheduler_pb2.ModelSpec(uri=uri))
    for n, v in params:
        m.modelSpec.parameters.add(name=n, value=v)
    assert model_endpoint(m) == expected


@pytest.mark.parametrize("name,endpoint,msg", [
    ("Bad.Name", "grpc://h:1", "does not have a valid name"),
    ("ok", "grpc://h", "is invalid: expected grpc://HOST:PORT"),
    ("ok", "ftp://h:1", None),
])
def test_resolve_endpoint_errors(name, endpoint, msg):
    from scheduler_min.models import ModelDefinitionError, resolve_endpoint

    m = scheduler_pb2.Model(meta=scheduler_pb2.MetaData(name=name))
    m.modelSpec.parameters.add(name="endpoint", value=endpoint)
    with pytest.raises(ModelDefinitionError) as info:
        resolve_endpoint(m)
    if msg:
        assert msg in str(info.value)


def test_default_endpoint_is_written_into_the_definition():
    from scheduler_min.models import resolve_endpoint

    m = scheduler_pb2.Model(meta=scheduler_pb2.MetaData(name="m"), modelSpec=scheduler_pb2.ModelSpec(uri="gs://x"))
    out = resolve_endpoint(m, default="grpc://127.0.0.1:9500")
    assert [(p.name, p.value) for p in out.modelSpec.parameters] == [("endpoint", "grpc://127.0.0.1:9500")]
