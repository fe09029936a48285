"""Names whose Kafka topics would pass Kafka's 249-character limit are refused when loaded: by the
scheduler over gRPC (INVALID_ARGUMENT with the reason) and by the CLI before it connects, each
with the topic prefix and namespace it uses."""
import grpc
import pytest

from chainer_api import scheduler_pb2, scheduler_pb2_grpc
from dataflow.kafka import MAX_TOPIC_NAME_LENGTH, TopicNamer
from dataflow_cli import main
from scheduler_min.server import SchedulerConfig, run_in_thread
from scheduler_min.validation import PipelineValidationError, check_topic_names

NS = "a-rather-long-namespace-for-topics"
PREFIX = "acme-kafka"


def room(namer: TopicNamer, kind: str) -> int:
    return MAX_TOPIC_NAME_LENGTH - len(namer.longest_topic(kind, ""))


def test_limit_follows_prefix_and_namespace():
    default = TopicNamer()
    assert room(default, "pipeline") == 249 - len("seldon.default.pipeline..outputs") == 217
    assert room(default, "model") == 220
    custom = TopicNamer(prefix=PREFIX, namespace=NS)
    assert room(custom, "pipeline") == 249 - len(f"{PREFIX}.{NS}.pipeline..outputs")
    for namer in (default, custom):
        for kind in ("pipeline", "model"):
            n = room(namer, kind)
            assert len(namer.longest_topic(kind, "x" * n)) == MAX_TOPIC_NAME_LENGTH
            assert namer.name_too_long(kind, "x" * n) is None
            assert namer.name_too_long(kind, "x" * (n + 1)) is not None


def test_check_topic_names_messages():
    namer = TopicNamer()
    check_topic_names(namer, pipeline="p" * 217, steps=["s" * 220], model="m" * 220)
    with pytest.raises(PipelineValidationError) as info:
        check_topic_names(namer, pipeline="p" * 300)
    assert str(info.value) == (
        "pipeline name " + "p" * 32 + "...(300 characters) is too long: its topic "
        "seldon.default.pipeline.<name>.outputs "
        "would be 332 characters, over Kafka's limit of 249; with topic prefix 'seldon' and namespace 'default' a "
        "pipeline name may have at most 217 characters")
    with pytest.raises(PipelineValidationError,
                       match=r"pipeline p step name s{32}\.\.\.\(221 characters\) is too long"):
        check_topic_names(namer, pipeline="p", steps=["ok", "s" * 221])
    with pytest.raises(PipelineValidationError, match=r"model name m{32}\.\.\.\(221 characters\) is too long"):
        check_topic_names(namer, model="m" * 221)


def pipeline(name: str, step: str = "m") -> scheduler_pb2.Pipeline:
    p = scheduler_pb2.Pipeline(name=name)
    p.steps.add(name=step)
    return p


def model(name: str) -> scheduler_pb2.Model:
    m = scheduler_pb2.Model()
    m.meta.name = name
    m.modelSpec.uri = "grpc://127.0.0.1:9500"
    return m


@pytest.fixture
def stub(tmp_path):
    sched = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", topic_prefix=PREFIX,
                                          namespace=NS, state_dir=str(tmp_path / "st")))
    channel = grpc.insecure_channel(sched.address)
    try:
        yield scheduler_pb2_grpc.SchedulerStub(channel)
    finally:
        channel.close()
        sched.stop()


def invalid_argument(call) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return info.value.details()


def test_scheduler_refuses_long_names_over_grpc(stub):
    namer = TopicNamer(prefix=PREFIX, namespace=NS)
    longest_pipeline, longest_model = room(namer, "pipeline"), room(namer, "model")
    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("p" * longest_pipeline)), timeout=10)
    details = invalid_argument(lambda: stub.LoadPipeline(
        scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("p" * (longest_pipeline + 1))), timeout=10))
    assert details.startswith(f"pipeline name {'p' * 32}...({longest_pipeline + 1} characters) is too long: "
                              f"its topic {PREFIX}.{NS}.pipeline.<name>.outputs")
    assert f"a pipeline name may have at most {longest_pipeline} characters" in details
    details = invalid_argument(lambda: stub.LoadPipeline(
        scheduler_pb2.LoadPipelineRequest(pipeline=pipeline("q", step="s" * (longest_model + 1))), timeout=10))
    assert details.startswith("pipeline q step name ssss") and f"{PREFIX}.{NS}.model.<name>.outputs" in details
    stub.LoadModel(scheduler_pb2.LoadModelRequest(model=model("m" * longest_model)), timeout=10)
    details = invalid_argument(lambda: stub.LoadModel(
        scheduler_pb2.LoadModelRequest(model=model("m" * (longest_model + 1))), timeout=10))
    assert details.startswith("model name mmmm") and "is too long" in details


def test_cli_uses_its_namespace_for_the_limit(tmp_path, monkeypatch, capsys):
    """A name that fits under "default" can be too long for the namespace the CLI is set up for."""
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.setenv("SELDON_SCHEDULE_HOST", "127.0.0.1:1")
    f = tmp_path / "p.yaml"
    f.write_text(f"kind: Pipeline\nmetadata: {{name: {'p' * 217}}}\nspec: {{steps: [{{name: m}}]}}\n")
    monkeypatch.setenv("POD_NAMESPACE", NS)
    assert main(["pipeline", "load", "-f", str(f)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {f}: pipeline name ") and f"seldon.{NS}.pipeline.<name>.outputs" in err
    monkeypatch.setenv("POD_NAMESPACE", "default")
    assert main(["pipeline", "load", "-f", str(f)]) == 1  # fits: it gets as far as the (absent) scheduler
    assert "cannot reach the scheduler" in capsys.readouterr().err
