"""scheduler_min and gateway acks, without servers: instructions out, acks folded into gateway status."""
import asyncio

from chainer_api import chainer_pb2, scheduler_pb2
from gateways import scheduler_watch
from scheduler_min import convert
from scheduler_min.conflicts import ConflictResolver, model_ack_state
from scheduler_min.gateway_acks import NO_MODEL_GATEWAYS, NO_PIPELINE_GATEWAYS, ModelGateways, PipelineGateways
from scheduler_min.store import Store

S = scheduler_pb2.PipelineVersionState
M = scheduler_pb2.ModelStatus
PSR = scheduler_pb2.PipelineStatusResponse
MSR = scheduler_pb2.ModelStatusResponse
OP = chainer_pb2.PipelineUpdateMessage
MOP = scheduler_pb2.ModelUpdateMessage

PIPE = "kind: Pipeline\nmetadata: {name: p}\nspec:\n  steps:\n    - name: m\n"


def proto():
    return convert.pipelines_from_yaml(PIPE)[0]


def connect(gws, *names):
    """Gateways subscribed: their queues, then the rebalance a subscription triggers."""
    queues = {}
    for n in names:
        queues[n] = gws.streams.queues[n] = asyncio.Queue()
    gws.rebalance()
    return queues


def drain(q):
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def ack(msg, stream, success=True, reason=""):
    v = msg.versions[0]
    op = OP.Create if msg.operation == PSR.PipelineCreate else OP.Delete
    return chainer_pb2.PipelineUpdateStatusMessage(
        update=OP(op=op, pipeline=msg.pipelineName, version=v.state.pipelineVersion, uid=v.pipeline.uid,
                  stream=stream, timestamp=msg.timestamp), success=success, reason=reason)


def test_no_gateway_keeps_create_with_reason_and_terminates_at_once():
    st = Store(None)
    gws = PipelineGateways(st)
    r = st.add_pipeline(proto())
    gws.created(r)
    assert (r.gw_status, r.gw_reason) == (S.PipelineCreate, NO_PIPELINE_GATEWAYS)
    st.remove_pipeline("p")
    gws.removed(r)
    assert (r.gw_status, r.gw_reason) == (S.PipelineTerminated, NO_PIPELINE_GATEWAYS)


def test_gateway_create_ack_ready_then_delete_ack_terminated():
    st = Store(None)
    gws = PipelineGateways(st)
    r = st.add_pipeline(proto())
    gws.created(r)
    q = connect(gws, "gw-a")["gw-a"]
    (msg,) = drain(q)  # the rebalance on subscription sends Create
    assert msg.operation == PSR.PipelineCreate and msg.timestamp > 0 and len(msg.versions) == 1
    assert msg.versions[0].pipeline.uid == r.pv.uid
    assert (r.gw_status, r.gw_reason) == (S.PipelineCreating, "Rebalance")
    status = st.pipeline_status("p").versions[0].state
    assert status.pipelineGwStatus == S.PipelineCreating and status.pipelineGwReason == "Rebalance"

    stale = ack(msg, "gw-a")
    stale.update.timestamp = msg.timestamp + 7
    gws.handle_ack(stale)  # another iteration's ack: ignored
    gws.handle_ack(ack(msg, "gw-stranger"))  # not a gateway of this iteration: ignored
    assert r.gw_status == S.PipelineCreating
    gws.handle_ack(ack(msg, "gw-a"))
    assert (r.gw_status, r.gw_reason) == (S.PipelineReady, "1/1 ready ")
    assert st.pipeline_status("p").versions[0].state.pipelineGwStatus == S.PipelineReady

    st.remove_pipeline("p")
    gws.removed(r)
    (delete,) = drain(q)
    assert delete.operation == PSR.PipelineDelete and delete.timestamp > msg.timestamp
    assert r.gw_status == S.PipelineTerminating
    gws.handle_ack(ack(delete, "gw-a"))
    assert r.gw_status == S.PipelineTerminated and "p" not in gws.conflicts.clock


def test_two_gateways_ready_only_when_all_answered_and_failure_reason():
    st = Store(None)
    gws = PipelineGateways(st)
    qs = connect(gws, "gw-a", "gw-b")
    r = st.add_pipeline(proto())
    gws.created(r)
    (ma,), (mb,) = drain(qs["gw-a"]), drain(qs["gw-b"])
    assert ma == mb and ma.operation == PSR.PipelineCreate
    gws.handle_ack(ack(ma, "gw-a"))
    assert r.gw_status == S.PipelineCreating
    gws.handle_ack(ack(mb, "gw-b", success=False, reason="Failed to load/store pipeline p: boom"))
    assert r.gw_status == S.PipelineReady  # one replica serves it, as the reference counts
    assert r.gw_reason == "1/2 ready 1/2 failed Failed to load/store pipeline p: boom"


def test_all_failed_is_failed_and_retried():
    st = Store(None)
    gws = PipelineGateways(st)
    q = connect(gws, "gw-a")["gw-a"]
    r = st.add_pipeline(proto())
    gws.created(r)
    (msg,) = drain(q)
    gws.handle_ack(ack(msg, "gw-a", success=False, reason="kafka down"))
    assert r.gw_status == S.PipelineFailed
    assert gws.retry_failed(max_retries=1) == 1
    (again,) = drain(q)
    assert again.operation == PSR.PipelineCreate and again.timestamp > msg.timestamp
    gws.handle_ack(ack(again, "gw-a", success=False))
    assert gws.retry_failed(max_retries=1) == 0  # at most once


def test_gateway_leaving_and_new_version_supersedes_old():
    st = Store(None)
    gws = PipelineGateways(st)
    q = connect(gws, "gw-a")["gw-a"]
    r1 = st.add_pipeline(proto())
    gws.created(r1)
    gws.handle_ack(ack(drain(q)[0], "gw-a"))
    r2 = st.add_pipeline(proto())
    gws.created(r2)
    (m2,) = drain(q)
    assert m2.versions[0].state.pipelineVersion == 2
    gws.handle_ack(ack(m2, "gw-a"))
    assert r2.gw_status == S.PipelineReady
    assert r1.gw_status == S.PipelineTerminate  # marked, not sent: gateways serve by name
    assert drain(q) == []
    del gws.streams.queues["gw-a"]
    gws.rebalance()
    assert (r2.gw_status, r2.gw_reason) == (S.PipelineCreate, NO_PIPELINE_GATEWAYS)


def test_model_gateway_states():
    st = Store(None)
    mgws = ModelGateways(st)
    model = scheduler_pb2.Model(meta=scheduler_pb2.MetaData(name="m"))
    model.modelSpec.parameters.add(name="endpoint", value="grpc://127.0.0.1:9500")
    st.add_model(model)
    mgws.created("m")
    assert st.model_status("m").versions[0].state.modelGwState == M.ModelCreate
    assert st.model_status("m").versions[0].state.modelGwReason == NO_MODEL_GATEWAYS
    q = connect(mgws, "mgw")["mgw"]
    (msg,) = drain(q)
    assert msg.operation == MSR.ModelCreate and msg.timestamp > 0
    assert msg.versions[0].modelDefn.modelSpec.parameters[0].value == "grpc://127.0.0.1:9500"

    def mack(m, op, success=True):
        return scheduler_pb2.ModelUpdateStatusMessage(
            update=MOP(op=op, model="m", version=m.versions[0].version, stream="mgw", timestamp=m.timestamp),
            success=success, reason="")

    mgws.handle_ack(mack(msg, MOP.Create))
    state = st.model_status("m").versions[0].state
    assert (state.modelGwState, state.modelGwReason) == (M.ModelAvailable, "1/1 ready ")
    st.remove_model("m")
    mgws.removed("m")
    (delete,) = drain(q)
    assert delete.operation == MSR.ModelDelete and delete.deleted
    mgws.handle_ack(mack(delete, MOP.Delete))
    assert st.model_status("m").versions[0].state.modelGwState == M.ModelTerminated


def test_model_aggregation():
    cr = ConflictResolver()
    cr.new_iteration("m", ["a", "b"])
    cr.update("m", "a", model_ack_state(MOP.Create, True))
    assert cr.aggregate_model("m", MOP.Create) == (M.ModelProgressing, "1/2 ready ")
    cr.update("m", "b", model_ack_state(MOP.Create, False))
    assert cr.aggregate_model("m", MOP.Create) == (M.ModelAvailable, "1/2 ready 1/2 failed ")
    cr.new_iteration("m", ["a"])
    cr.update("m", "a", model_ack_state(MOP.Delete, False))
    assert cr.aggregate_model("m", MOP.Delete)[0] == M.ModelTerminateFailed


def test_gateway_status_persisted_and_old_state_files(tmp_path):
    st = Store(str(tmp_path))
    r = st.add_pipeline(proto())
    st.set_gw_state(r, S.PipelineReady, "1/1 ready ")
    back = Store(str(tmp_path)).pipelines["p"][0]
    assert (back.gw_status, back.gw_reason) == (S.PipelineReady, "1/1 ready ")
    import json
    path = tmp_path / "scheduler-state.json"
    data = json.loads(path.read_text())
    for v in data["pipelines"]["p"]:
        del v["gw_status"], v["gw_reason"]
    data["pipelines"]["p"][0]["status"] = S.PipelineTerminated
    path.write_text(json.dumps(data))
    assert Store(str(tmp_path)).pipelines["p"][0].gw_status == S.PipelineTerminated  # follows the engines'


def test_watch_follows_the_operation_not_the_state():
    """A rebalance Delete keeps the pipeline Ready: the gateway must still stop serving it."""
    msg = PSR(pipelineName="p", operation=PSR.PipelineDelete, timestamp=4)
    v = msg.versions.add()
    v.pipeline.uid = "u1"
    v.state.pipelineVersion = 3
    v.state.status = S.PipelineReady
    ev = scheduler_watch.pipeline_event(msg)
    assert (ev.live, ev.instruction, ev.version, ev.uid, ev.timestamp) == (False, True, 3, "u1", 4)
    out = scheduler_watch.pipeline_ack(ev, "gw-1", scheduler_watch.Ack(True, "Pipeline p deleted"))
    assert out.update == OP(op=OP.Delete, pipeline="p", version=3, uid="u1", stream="gw-1", timestamp=4)
    assert out.success and out.reason == "Pipeline p deleted"
    msg.operation = PSR.PipelineCreate
    v.state.status = S.PipelineTerminating  # the state does not matter for an instruction
    assert scheduler_watch.pipeline_event(msg).live
    # a plain status (a scheduler without gateway acks) is read by state and never acked
    plain = PSR(pipelineName="p")
    plain.versions.add().state.status = S.PipelineReady
    ev = scheduler_watch.pipeline_event(plain)
    assert ev.live and not ev.instruction


def test_watch_model_instruction_and_ack():
    msg = MSR(modelName="m", operation=MSR.ModelDelete, timestamp=9, keepTopics=True)
    v = msg.versions.add(version=2)
    v.state.state = M.ModelAvailable
    ev = scheduler_watch.model_event(msg)
    assert (ev.available, ev.instruction, ev.version, ev.keep_topics) == (False, True, 2, True)
    out = scheduler_watch.model_ack(ev, "mgw", scheduler_watch.Ack(False, "Failed to remove model m"))
    assert out.update == MOP(op=MOP.Delete, model="m", version=2, stream="mgw", timestamp=9)
    assert not out.success
