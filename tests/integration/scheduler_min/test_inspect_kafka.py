"""`dataflow pipeline inspect` against the embedded broker and an in-process scheduler."""
import json

import numpy as np
import pytest

from dataflow import oip
from dataflow_cli import main
from dataflow_testing.fake_engine import FakeEngine
from scheduler_min.server import SchedulerConfig, run_in_thread
from tests.manifests import models_yaml

PIPE = """
kind: Pipeline
metadata: {name: insp}
spec:
  steps:
    - name: insp-m1
  output:
    steps: [insp-m1]
"""


@pytest.fixture
def setup(kafka, tmp_path, monkeypatch):
    ns = kafka.unique("ns")
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.delenv("SELDON_KAFKA_CONFIG_PATH", raising=False)
    sched = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", namespace=ns))
    engine = FakeEngine(sched.chainer_address, "engine-insp")
    monkeypatch.setenv("SELDON_SCHEDULE_HOST", sched.address)
    monkeypatch.setenv("SELDON_KAFKA_BROKER", kafka.bootstrap)
    monkeypatch.setenv("POD_NAMESPACE", ns)
    f = tmp_path / "p.yaml"
    f.write_text(PIPE)
    m = tmp_path / "m.yaml"
    m.write_text(models_yaml("insp-m1"))
    assert main(["pipeline", "load", "-f", str(f)]) == 0
    assert main(["model", "load", "-f", str(m)]) == 0  # PipelineReady waits for the step models too
    assert main(["pipeline", "status", "insp", "-w", "PipelineReady", "-t", "10"]) == 0
    topics = {
        "in": f"seldon.{ns}.pipeline.insp.inputs",
        "m_in": f"seldon.{ns}.model.insp-m1.inputs",
        "m_out": f"seldon.{ns}.model.insp-m1.outputs",
        "out": f"seldon.{ns}.pipeline.insp.outputs",
    }
    kafka.create_topics(*topics.values(), f"seldon.{ns}.errors.errors")
    prod = kafka.producer()
    for rid in ("req1", "req2"):
        key = f"0.insp.{rid}"
        hdrs = [("pipeline", b"insp"), ("x-request-id", rid.encode())]
        req = oip.make_request({"INPUT": np.array([[1.0, 2.0]], dtype=np.float32)}, id=rid)
        prod.produce(topics["in"], key=key, value=req.SerializeToString(), headers=hdrs)
        prod.flush(10)
        resp = oip.to_raw(oip.make_response({"OUTPUT0": np.array([[3, 4]], dtype=np.int64)}, id=rid))
        prod.produce(topics["m_out"], key=key, value=resp.SerializeToString(), headers=hdrs)
        prod.flush(10)
    # a record of another pipeline on the shared model topic is filtered out
    prod.produce(topics["m_out"], key="0.other.req9", value=b"", headers=[("pipeline", b"other")])
    prod.flush(10)
    yield topics
    engine.close()
    sched.stop()


def test_inspect_raw_and_json_filtered_by_request_id(setup, capsys):
    capsys.readouterr()
    assert main(["pipeline", "inspect", "insp", "--request-id", "0.insp.req1", "--offset", "10", "-d", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Using consumer config map[")
    assert out[1] == f"Topic: {setup['m_in']}"
    blocks = "\n".join(out[1:]).split("----------------")
    by_topic = {b.strip().splitlines()[0][len("Topic: "):]: b.strip().splitlines()[1:] for b in blocks if b.strip()}
    assert list(by_topic)[:4] == [setup["m_in"], setup["m_out"], setup["in"], setup["out"]]
    (line,) = by_topic[setup["in"]]
    key, value = line.split("\t")
    assert key == "0.insp.req1" and json.loads(value)["inputs"][0]["contents"]["fp32Contents"] == [1.0, 2.0]
    (line,) = by_topic[setup["m_out"]]
    assert json.loads(line.split("\t")[1])["outputs"][0]["contents"]["int64Contents"] == ["3", "4"]
    assert by_topic[setup["m_in"]] == [] and by_topic[setup["out"]] == []

    assert main(["pipeline", "inspect", "insp.insp-m1.outputs.OUTPUT0", "--offset", "10", "--format", "json",
                 "-v", "--request-id", "0.insp.req2"]) == 0
    text = capsys.readouterr().out.splitlines()
    doc = json.loads(text[1])
    (topic,) = doc["topics"]
    assert topic["name"] == setup["m_out"]
    (msg,) = topic["msgs"]
    assert msg["key"] == "0.insp.req2"
    assert msg["headers"] == {"pipeline": ["insp"], "x-request-id": ["req2"]}
    assert msg["value"]["name"] == "OUTPUT0" and msg["value"]["contents"]["int64Contents"] == ["3", "4"]


def test_inspect_default_offset_is_last_message(setup, capsys):
    capsys.readouterr()
    assert main(["pipeline", "inspect", "insp.inputs", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out.splitlines()[1])
    assert [m["key"] for m in doc["topics"][0]["msgs"]] == ["0.insp.req2"]


def test_inspect_record_without_pipeline_header(setup, kafka, capsys):
    prod = kafka.producer()
    prod.produce(setup["out"], key="0.insp.x", value=b"")
    prod.flush(10)
    capsys.readouterr()
    assert main(["pipeline", "inspect", "insp.outputs"]) == 1
    assert capsys.readouterr().err == "Error: No pipeline found in headers.\n"
