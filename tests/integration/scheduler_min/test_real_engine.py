"""Real scheduler + real `dataflow engine` subprocess + embedded broker, driven through the CLI.

Load a pipeline YAML with `dataflow pipeline load`, wait for PipelineReady, feed the pipeline input
topic, play the model by answering on its output topic, then `dataflow pipeline inspect` must show
the request's records on every topic, in raw and json formats.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dataflow import oip
from dataflow_cli import main
from scheduler_min.server import SchedulerConfig, run_in_thread
from tests.manifests import models_yaml
from tests.waiting import wait_until

PIPE = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: e2e-chain
spec:
  steps:
    - name: e2e-m1
  output:
    steps:
    - e2e-m1
"""


def inspect_json(capsys, *argv):
    capsys.readouterr()
    assert main(["pipeline", "inspect", *argv, "--format", "json", "-d", "3"]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[1])


@contextlib.contextmanager
def engine_process(sched, kafka, ns, tmp_path):
    """A `dataflow engine` subprocess on ``sched``, logging to tmp_path/engine.log; SIGTERM (then SIGKILL) on exit."""
    log = open(tmp_path / "engine.log", "w")
    engine = subprocess.Popen(
        [sys.executable, "-m", "dataflow_cli", "engine", "--scheduler", sched.chainer_address,
         "--kafka", kafka.bootstrap, "--name", f"engine-{ns}", "--state-dir", str(tmp_path / "engine")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield engine
    finally:
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGTERM)
            try:
                engine.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(engine.pid, signal.SIGKILL)
                engine.wait(5)
        log.close()


def load_model(tmp_path) -> None:
    """The step's model: PipelineReady waits for the step models too."""
    m = tmp_path / "m.yaml"
    m.write_text(models_yaml("e2e-m1"))
    assert main(["model", "load", "-f", str(m)]) == 0


@pytest.fixture
def stack(kafka, tmp_path, monkeypatch):
    ns = kafka.unique("e2e")
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.delenv("SELDON_KAFKA_CONFIG_PATH", raising=False)
    sched = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", namespace=ns,
                                          state_dir=str(tmp_path / "sched")))
    monkeypatch.setenv("SELDON_SCHEDULE_HOST", sched.address)
    monkeypatch.setenv("SELDON_KAFKA_BROKER", kafka.bootstrap)
    monkeypatch.setenv("POD_NAMESPACE", ns)
    load_model(tmp_path)
    try:
        with engine_process(sched, kafka, ns, tmp_path):
            yield ns, sched
    finally:
        sched.stop()


def test_cli_load_ready_and_inspect_through_real_engine(stack, kafka, tmp_path, capsys):
    ns, _ = stack
    f = tmp_path / "p.yaml"
    f.write_text(PIPE)
    assert main(["pipeline", "load", "-f", str(f)]) == 0
    code = main(["pipeline", "status", "e2e-chain", "-w", "PipelineReady", "-t", "90"])
    if code != 0:
        pytest.fail("pipeline not ready; engine log:\n" + (tmp_path / "engine.log").read_text()[-3000:])
    topic = {
        "in": f"seldon.{ns}.pipeline.e2e-chain.inputs", "out": f"seldon.{ns}.pipeline.e2e-chain.outputs",
        "m_in": f"seldon.{ns}.model.e2e-m1.inputs", "m_out": f"seldon.{ns}.model.e2e-m1.outputs",
    }
    key = "0.e2e-chain.req-1"
    headers = [("pipeline", b"e2e-chain"), ("x-request-id", b"req-1")]
    request = oip.make_request({"INPUT": np.array([[1.0, 2.0, 3.0]], dtype=np.float32)}, id="req-1")
    prod = kafka.producer()

    def seen(doc, name):
        return [m for t in doc["topics"] if t["name"] == name for m in (t["msgs"] or [])]

    # The pipeline input reaches the model input topic through the engine's first step.
    deadline = time.monotonic() + 60
    while True:
        prod.produce(topic["in"], key=key, value=request.SerializeToString(), headers=headers)
        prod.flush(10)
        doc = inspect_json(capsys, "e2e-chain.e2e-m1.inputs", "--request-id", key, "--offset", "20")
        if seen(doc, topic["m_in"]):
            break
        assert time.monotonic() < deadline, "the engine never forwarded the request to the model topic"
    # Play the model: answer on its output topic; the engine's output step forwards it.
    response = oip.make_response({"OUTPUT": np.array([[2.0, 4.0, 6.0]], dtype=np.float32)}, id="req-1")
    prod.produce(topic["m_out"], key=key, value=response.SerializeToString(), headers=headers)
    prod.flush(10)
    wait_until(lambda: seen(inspect_json(capsys, "e2e-chain.outputs", "--request-id", key, "--offset", "20"),
                            topic["out"]), 60, "the engine to forward the model output to the pipeline output",
               interval=0.5)

    doc = inspect_json(capsys, "e2e-chain", "--request-id", key, "--offset", "20", "-v")
    names = [t["name"] for t in doc["topics"]]
    assert names == [topic["m_in"], topic["m_out"], topic["in"], topic["out"], f"seldon.{ns}.errors.errors"]
    (out_msg,) = seen(doc, topic["out"])[-1:]
    assert out_msg["key"] == key
    assert out_msg["headers"]["pipeline"] == ["e2e-chain"]
    assert out_msg["value"]["outputs"][0]["contents"]["fp32Contents"] == [2.0, 4.0, 6.0]
    assert seen(doc, topic["m_in"])[-1]["value"]["inputs"][0]["name"] == "INPUT"
    assert all(m["key"] == key for t in doc["topics"] for m in (t["msgs"] or []))

    capsys.readouterr()
    assert main(["pipeline", "inspect", "e2e-chain.outputs", "--request-id", key, "--offset", "20"]) == 0
    raw = capsys.readouterr().out.splitlines()
    assert raw[0].startswith("Using consumer config map[") and raw[1] == f"Topic: {topic['out']}"
    assert raw[2].startswith(key + "\t") and raw[-1] == "----------------"
    assert json.loads(raw[2].split("\t", 1)[1])["outputs"][0]["name"] == "OUTPUT"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scheduler_restart_real_engine_returns_to_ready(kafka, tmp_path, monkeypatch):
    """State survives a scheduler restart; the engine reconnects and the pipeline is Ready again."""
    ns = kafka.unique("restart")
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(tmp_path / "none.json"))
    cfg = SchedulerConfig(port=_free_port(), chainer_port=_free_port(), host="127.0.0.1", namespace=ns,
                          state_dir=str(tmp_path / "sched"))
    sched = run_in_thread(cfg)
    monkeypatch.setenv("SELDON_SCHEDULE_HOST", sched.address)
    load_model(tmp_path)
    try:
        with engine_process(sched, kafka, ns, tmp_path):
            f = tmp_path / "p.yaml"
            f.write_text(PIPE)
            assert main(["pipeline", "load", "-f", str(f)]) == 0
            assert main(["pipeline", "status", "e2e-chain", "-w", "PipelineReady", "-t", "90"]) == 0
            sched.stop()
            sched = run_in_thread(cfg)
            assert main(["pipeline", "status", "e2e-chain", "-w", "PipelineReady", "-t", "90"]) == 0, \
                (tmp_path / "engine.log").read_text()[-3000:]
    finally:
        sched.stop()


def test_version_upgrade_with_real_engine(stack, tmp_path, capsys):
    """Loading the same pipeline again runs version 2; once it is Ready version 1 is deleted."""
    f = tmp_path / "p.yaml"
    f.write_text(PIPE)
    assert main(["pipeline", "load", "-f", str(f)]) == 0
    assert main(["pipeline", "status", "e2e-chain", "-w", "PipelineReady", "-t", "90"]) == 0
    f.write_text(PIPE.replace("    - name: e2e-m1\n", "    - name: e2e-m1\n      joinWindowMs: 500\n", 1))
    assert main(["pipeline", "load", "-f", str(f)]) == 0
    last: dict = {}

    def settled() -> dict | None:
        capsys.readouterr()
        assert main(["pipeline", "status", "e2e-chain", "--all-versions"]) == 0
        last["doc"] = doc = json.loads(capsys.readouterr().out)
        last["states"] = [(v["state"].get("pipelineVersion"), v["state"]["status"]) for v in doc["versions"]]
        return doc if last["states"] == [(1, "PipelineTerminated"), (2, "PipelineReady")] else None

    doc = wait_until(settled, 90, "the upgrade to settle", interval=0.3, detail=lambda: f"{last.get('states')}; "
                     "engine log:\n" + (tmp_path / "engine.log").read_text()[-3000:])
    assert doc["versions"][1]["pipeline"]["steps"][0]["joinWindowMs"] == 500
