"""The committed stubs match the .proto files: same package, messages, field names and numbers."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from chainer_api import chainer_pb2, chainer_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from chainer_api.regenerate import PROTO_DIR, regenerate

FIELD_RE = re.compile(r"^\s*(?:optional\s+|repeated\s+)?([\w.<>, ]+?)\s+(\w+)\s*=\s*(\d+)\s*;", re.M)


def proto_fields(text: str) -> dict[str, dict[str, int]]:
    """Message -> {field: number} parsed from .proto text (nested messages flattened by name;
    enum values and oneof members are included as they appear inside the message body)."""
    out: dict[str, dict[str, int]] = {}
    stack: list[tuple[str, str]] = []  # (kind, name)
    for line in text.splitlines():
        line = line.split("//")[0]
        m = re.match(r"\s*(message|enum|oneof|service)\s+(\w+)\s*{", line)
        if m:
            stack.append((m.group(1), m.group(2)))
            if m.group(1) == "message":
                out.setdefault(m.group(2), {})
            continue
        if line.strip().startswith("}") and stack:
            stack.pop()
            continue
        fm = FIELD_RE.match(line)
        if fm and stack:
            owner = next((n for k, n in reversed(stack) if k == "message"), None)
            kind = next((k for k, n in reversed(stack) if k in ("message", "enum")), None)
            if owner and kind == "message":
                out[owner][fm.group(2)] = int(fm.group(3))
    return out


def descriptor_fields(module) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}

    def walk(desc):
        out[desc.name] = {f.name: f.number for f in desc.fields}
        for nested in desc.nested_types:
            if not nested.GetOptions().map_entry:
                walk(nested)

    for desc in module.DESCRIPTOR.message_types_by_name.values():
        walk(desc)
    return out


@pytest.mark.parametrize("module,proto,package", [
    (chainer_pb2, "chainer.proto", "seldon.mlops.chainer"),
    (scheduler_pb2, "scheduler.proto", "seldon.mlops.scheduler"),
])
def test_stub_fields_match_proto_text(module, proto, package):
    text = (PROTO_DIR / proto).read_text()
    assert f"package {package};" in text
    assert module.DESCRIPTOR.package == package
    assert proto_fields(text) == descriptor_fields(module)


def test_committed_stubs_equal_fresh_generation(tmp_path: Path):
    regenerate(tmp_path)
    committed = Path(chainer_pb2.__file__).parent
    for name in ("chainer_pb2.py", "chainer_pb2.pyi", "chainer_pb2_grpc.py",
                 "scheduler_pb2.py", "scheduler_pb2.pyi", "scheduler_pb2_grpc.py"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"{name} is stale: run python -m chainer_api.regenerate")


def test_pipeline_update_message_wire_numbers():
    msg = chainer_pb2.PipelineUpdateMessage(
        op=chainer_pb2.PipelineUpdateMessage.Create, pipeline="tfsimples", version=1, uid="ciep298fh5ss73dpdir0",
        updates=[chainer_pb2.PipelineStepUpdate(
            sources=[chainer_pb2.PipelineTopic(pipelineName="tfsimples",
                                               topicName="seldon.default.model.tfsimple1.outputs")],
            sink=chainer_pb2.PipelineTopic(pipelineName="tfsimples", topicName="seldon.default.model.tfsimple2.inputs"),
            inputJoinTy=chainer_pb2.PipelineStepUpdate.Inner, joinWindowMs=0,
            tensorMap=[chainer_pb2.PipelineTensorMapping(pipelineName="tfsimples",
                                                         topicAndTensor="seldon.default.model.tfsimple1.outputs.OUTPUT0",
                                                         tensorName="INPUT0")],
            batch=chainer_pb2.Batch(size=2))],
        pipelineOutputTopic="seldon.default.pipeline.tfsimples.outputs",
        pipelineErrorTopic="seldon.default.errors.errors", allowCycles=True, maxStepRevisits=3, timestamp=7, stream="s")
    data = msg.SerializeToString()
    # Tag bytes: (field_number << 3) | wire_type. op=1 varint -> 0x08; timestamp=10 varint -> 0x50; stream=11 -> 0x5a.
    assert data.startswith(b"\x08\x01\x12\x09tfsimples\x18\x01")
    assert b"\x50\x07" in data and data.endswith(b"\x5a\x01s")
    back = chainer_pb2.PipelineUpdateMessage.FromString(data)
    assert back == msg
    assert back.updates[0].HasField("joinWindowMs") and back.updates[0].joinWindowMs == 0
    assert chainer_pb2.PipelineUpdateMessage.Rebalance == 3 and chainer_pb2.PipelineUpdateMessage.Ready == 4
    assert [v.number for v in chainer_pb2.PipelineStepUpdate.PipelineJoinType.DESCRIPTOR.values] == [0, 1, 2, 3]


def test_scheduler_pipeline_wire_numbers():
    p = scheduler_pb2.Pipeline(
        name="p", uid="u", version=2,
        steps=[scheduler_pb2.PipelineStep(name="m", inputs=["p.inputs"], tensorMap={"p.inputs.A": "B"},
                                          inputsJoin=scheduler_pb2.PipelineStep.OUTER)],
        output=scheduler_pb2.PipelineOutput(steps=["m.outputs"], stepsJoin=scheduler_pb2.PipelineOutput.ANY),
        allowCycles=True, maxStepRevisits=5)
    data = p.SerializeToString()
    assert data.startswith(b"\x0a\x01p\x12\x01u\x18\x02")
    assert b"\x48\x01" in data and b"\x50\x05" in data  # allowCycles=9, maxStepRevisits=10
    assert scheduler_pb2.Pipeline.FromString(data) == p
    st = scheduler_pb2.PipelineVersionState
    assert (st.PipelineReady, st.PipelineRebalancing, st.PipelineFailedTerminating) == (3, 8, 9)


def test_services_have_reference_names():
    assert chainer_pb2.DESCRIPTOR.services_by_name["Chainer"].full_name == "seldon.mlops.chainer.Chainer"
    sched = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"]
    assert sched.full_name == "seldon.mlops.scheduler.Scheduler"
    assert {"LoadPipeline", "PipelineStatus", "SubscribePipelineStatus", "ModelStatus"} <= set(sched.methods_by_name)
    assert hasattr(chainer_pb2_grpc, "ChainerServicer") and hasattr(scheduler_pb2_grpc, "SchedulerStub")


def test_gateway_ack_wire_contract():
    """Gateway acks and the fields they rely on carry the reference's numbers and enum values."""
    def numbers(msg):
        return {f.name: f.number for f in msg.DESCRIPTOR.fields}

    assert numbers(scheduler_pb2.PipelineStatusResponse) == {
        "pipelineName": 1, "versions": 2, "timestamp": 3, "operation": 4}
    assert {"pipelineGwStatus": 6, "pipelineGwReason": 7}.items() <= numbers(scheduler_pb2.PipelineVersionState).items()
    assert {"modelGwState": 6, "modelGwReason": 7}.items() <= numbers(scheduler_pb2.ModelStatus).items()
    assert numbers(scheduler_pb2.ModelStatusResponse) == {
        "modelName": 1, "versions": 2, "deleted": 3, "keepTopics": 4, "timestamp": 5, "operation": 6}
    assert numbers(scheduler_pb2.ModelSubscriptionRequest) == {"subscriberName": 1, "isModelGateway": 2}
    assert numbers(scheduler_pb2.ModelUpdateMessage) == {
        "op": 1, "model": 2, "version": 3, "uid": 4, "timestamp": 5, "stream": 6}
    assert numbers(scheduler_pb2.ModelUpdateStatusMessage) == {"update": 1, "success": 2, "reason": 3}
    assert numbers(scheduler_pb2.Model)["dataflowSpec"] == 5
    ops = scheduler_pb2.PipelineStatusResponse
    assert (ops.PipelineOperationUnknown, ops.PipelineCreate, ops.PipelineDelete) == (0, 1, 2)
    mops = scheduler_pb2.ModelStatusResponse
    assert (mops.ModelOperationUnknown, mops.ModelCreate, mops.ModelDelete) == (0, 1, 2)
    ms = scheduler_pb2.ModelStatus
    assert (ms.ModelScaledDown, ms.ModelCreate, ms.ModelTerminate) == (8, 9, 10)
    cp = scheduler_pb2.ControlPlaneResponse
    assert (cp.SEND_SERVERS, cp.SEND_MODELS, cp.SEND_PIPELINES, cp.SEND_EXPERIMENTS) == (1, 2, 3, 4)
    sched = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"]
    ev = sched.methods_by_name["PipelineStatusEvent"]
    assert ev.input_type.full_name == "seldon.mlops.chainer.PipelineUpdateStatusMessage"
    assert ev.output_type.full_name == "seldon.mlops.chainer.PipelineUpdateStatusResponse"
    mev = sched.methods_by_name["ModelStatusEvent"]
    assert mev.input_type.full_name == "seldon.mlops.scheduler.ModelUpdateStatusMessage"
    # a status with timestamp 3 / operation Delete: tags 0x18 and 0x20
    data = scheduler_pb2.PipelineStatusResponse(pipelineName="p", timestamp=3,
                                                operation=ops.PipelineDelete).SerializeToString()
    assert data == b"\x0a\x01p\x18\x03\x20\x02"
