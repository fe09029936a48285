"""`dataflow pipeline|model ...` against an in-process scheduler and a fake engine."""
import json

import pytest

from dataflow_cli import main
from dataflow_cli.config import resolve
from dataflow_testing.fake_engine import FakeEngine
from scheduler_min.server import SchedulerConfig, run_in_thread
from tests import manifests

TFSIMPLES = manifests.TFSIMPLES + """---
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: single
spec:
  steps:
    - name: tfsimple1
"""

MODELS = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata:
  name: tfsimple1
spec:
  storageUri: "gs://seldon-models/triton/simple"
  requirements: [tensorflow]
  memory: 100Ki
  endpoint: grpc://127.0.0.1:9500
---
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata:
  name: tfsimple2
spec:
  storageUri: http://127.0.0.1:9000
"""


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(tmp_path / "no-config.json"))
    for var in ("SELDON_SCHEDULE_HOST", "SELDON_KAFKA_BROKER", "SELDON_KAFKA_CONFIG_PATH", "POD_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def sched(tmp_path):
    s = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", state_dir=str(tmp_path / "st")))
    yield s
    s.stop()


@pytest.fixture
def host(sched, monkeypatch):
    monkeypatch.setenv("SELDON_SCHEDULE_HOST", sched.address)
    return sched.address


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_load_wait_ready_status_list_unload(sched, host, tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text(TFSIMPLES)
    engine = FakeEngine(sched.chainer_address, "engine-cli")
    try:
        assert run(capsys, "pipeline", "load", "-f", str(f)) == (0, "", "")
        # PipelineReady waits for the step models too: without them it times out saying which
        code, _, err = run(capsys, "pipeline", "status", "tfsimples", "-w", "PipelineReady", "-t", "0.5")
        assert code != 0 and "models not ready: tfsimple1 (not loaded), tfsimple2 (not loaded)" in err, err
        m = tmp_path / "m.yaml"
        m.write_text(MODELS)
        assert run(capsys, "model", "load", "-f", str(m))[0] == 0
        code, out, _ = run(capsys, "pipeline", "status", "tfsimples", "-w", "PipelineReady", "-t", "10")
        assert code == 0
        doc = json.loads(out)
        assert doc["pipelineName"] == "tfsimples"
        assert doc["versions"][0]["state"]["status"] == "PipelineReady"
        assert doc["versions"][0]["state"]["modelsReady"] is True
        assert doc["versions"][0]["pipeline"]["steps"][1]["inputs"] == ["tfsimple1.outputs"]
        code, out, _ = run(capsys, "pipeline", "status")
        assert [json.loads(line)["pipelineName"] for line in out.splitlines()] == ["single", "tfsimples"]
        code, out, _ = run(capsys, "pipeline", "list")
        lines = out.splitlines()
        assert lines[0].split() == ["pipeline", "state", "gateway", "reason"]
        assert any(line.split()[:2] == ["tfsimples", "PipelineReady"] for line in lines[2:])
        assert run(capsys, "pipeline", "unload", "tfsimples")[0] == 0
        code, out, _ = run(capsys, "pipeline", "status", "tfsimples", "-w", "PipelineTerminated", "-t", "10")
        assert code == 0
    finally:
        engine.close()


@pytest.mark.parametrize("argv,message", [
    (("pipeline", "status", "ghost"), "Error: pipeline ghost not found\n"),
    (("pipeline", "unload", "ghost"), "Error: pipeline ghost not found\n"),
    (("pipeline", "load", "-f", "/nonexistent.yaml"),
     "Error: cannot read /nonexistent.yaml: No such file or directory\n"),
    (("pipeline", "status", "x", "-w", "Ready"), None),
    (("model", "status", "ghost"), "Error: model ghost not found\n"),
    (("pipeline", "inspect", "ghost"), None),
])
def test_bad_input_is_one_line(sched, host, capsys, argv, message):
    code, _out, err = run(capsys, *argv)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("Error: ") and "Traceback" not in err
    if message:
        assert err == message


def test_invalid_pipeline_and_malformed_yaml(sched, host, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TFSIMPLES.replace("- tfsimple1\n      tensorMap", "- nope\n      tensorMap"))
    code, _, err = run(capsys, "pipeline", "load", "-f", str(bad))
    assert (code, err) == (1, "Error: pipeline tfsimples step tfsimple2 has input nope for step that does not exist\n")
    mal = tmp_path / "mal.yaml"
    mal.write_text("kind: Pipeline\nmetadata: {name: [\n")
    code, _, err = run(capsys, "pipeline", "load", "-f", str(mal))
    assert code == 1 and err.startswith(f"Error: {mal}: malformed YAML") and err.count("\n") == 1
    model = tmp_path / "m.yaml"
    model.write_text(MODELS)
    code, _, err = run(capsys, "pipeline", "load", "-f", str(model))
    assert (code, err) == (1, f"Error: {model}: document 1: expected kind Pipeline, got 'Model'\n")


def test_scheduler_unreachable(capsys, monkeypatch):
    monkeypatch.setenv("SELDON_SCHEDULE_HOST", "127.0.0.1:1")
    code, _, err = run(capsys, "pipeline", "list")
    assert code == 1 and err.startswith("Error: cannot reach the scheduler at 127.0.0.1:1")


def test_models(sched, host, tmp_path, capsys):
    f = tmp_path / "m.yaml"
    f.write_text(MODELS)
    assert run(capsys, "model", "load", "-f", str(f)) == (0, "", "")
    code, out, _ = run(capsys, "model", "status", "tfsimple1", "-w", "ModelAvailable", "-t", "5")
    doc = json.loads(out)
    v = doc["versions"][0]
    assert v["state"]["state"] == "ModelAvailable"
    params = {p["name"]: p["value"] for p in v["modelDefn"]["modelSpec"]["parameters"]}
    assert params["endpoint"] == "grpc://127.0.0.1:9500"
    assert v["modelDefn"]["modelSpec"]["memoryBytes"] == str(100 * 1024)
    code, out, _ = run(capsys, "model", "list")
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["tfsimple1", "tfsimple2"]
    assert run(capsys, "model", "unload", "tfsimple2")[0] == 0
    code, out, _ = run(capsys, "model", "list")
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["tfsimple1"]
    nope = tmp_path / "n.yaml"
    nope.write_text("kind: Model\nmetadata: {name: x}\nspec: {storageUri: 'gs://a/b'}\n")
    code, _, err = run(capsys, "model", "load", "-f", str(nope))
    assert code == 1 and "model x has no endpoint" in err


def test_connection_precedence(tmp_path, monkeypatch):
    import argparse

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"controlplane": {"schedulerHost": "cfg:1"},
                               "kafka": {"bootstrap": "kcfg:2", "namespace": "ns1", "topicPrefix": "pre"}}))
    kafka_cfg = tmp_path / "kafka.json"
    kafka_cfg.write_text(json.dumps({"bootstrap.servers": "kfile:3", "topicPrefix": "kpre",
                                     "consumer": {"security.protocol": "SSL"}}))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))       # no seldon CLI config of the user's
    monkeypatch.delenv("DATAFLOW_CLI_CONFIG", raising=False)
    blank = argparse.Namespace(scheduler_host=None, kafka_broker=None, namespace=None, kafka_config_path=None)
    assert resolve(blank).scheduler_host == "0.0.0.0:9004"
    assert resolve(blank).kafka_broker == "0.0.0.0:9092"
    monkeypatch.setenv("SELDON_SCHEDULE_HOST", "env:9")
    monkeypatch.setenv("SELDON_KAFKA_BROKER", "envk:9")
    monkeypatch.setenv("SELDON_KAFKA_CONFIG_PATH", str(kafka_cfg))
    c = resolve(blank)
    assert (c.scheduler_host, c.kafka_broker, c.topic_prefix, c.kafka_consumer) == (
        "env:9", "kfile:3", "kpre", {"security.protocol": "SSL"})
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(cfg))
    monkeypatch.setenv("POD_NAMESPACE", "podns")
    c = resolve(blank)
    assert (c.scheduler_host, c.kafka_broker, c.namespace, c.topic_prefix) == ("cfg:1", "kcfg:2", "podns", "pre")
    explicit = argparse.Namespace(scheduler_host="flag:1", kafka_broker="flagk:1", namespace="flagns",
                                  kafka_config_path=None)
    c = resolve(explicit)
    assert (c.scheduler_host, c.kafka_broker, c.namespace) == ("flag:1", "flagk:1", "flagns")
