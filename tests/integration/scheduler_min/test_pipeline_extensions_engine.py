"""`batch.rolling` and `passEmptyResponses` from a Pipeline YAML change what a real engine does.

`dataflow pipeline load` -> scheduler_min -> Chainer update -> a `dataflow engine` subprocess over the
embedded broker. One pipeline, three steps fed by the pipeline input:

* ``<ns>-roll``: ``batch: {size: 3, rolling: true}``: every request from the third on is sent to the
  model together with the two before it (sliding batches), not in disjoint groups of three;
* ``<ns>-pass``: selects a tensor the requests do not have, with ``passEmptyResponses: true``: an empty
  request reaches its model topic;
* ``<ns>-drop``: the same selection without it: the empty message is dropped, nothing arrives.
"""
import time

import numpy as np
import pytest

from dataflow import oip
from dataflow_cli import main
from scheduler_min.server import SchedulerConfig, run_in_thread
from tests.integration.scheduler_min.test_real_engine import engine_process  # a fixture
from tests.manifests import models_yaml

PIPE = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: ext
spec:
  steps:
    - name: {ns}-roll
      batch:
        size: 3
        rolling: true
    - name: {ns}-pass
      inputs: [ext.inputs.MISSING]
      passEmptyResponses: true
    - name: {ns}-drop
      inputs: [ext.inputs.MISSING]
  output:
    steps: [{ns}-roll]
"""


@pytest.fixture
def stack(kafka, tmp_path, monkeypatch):
    ns = kafka.unique("ext")
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.delenv("SELDON_KAFKA_CONFIG_PATH", raising=False)
    sched = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", namespace=ns,
                                          state_dir=str(tmp_path / "sched")))
    monkeypatch.setenv("SELDON_SCHEDULE_HOST", sched.address)
    monkeypatch.setenv("POD_NAMESPACE", ns)
    try:
        with engine_process(sched, kafka, ns, tmp_path):
            yield ns
    finally:
        sched.stop()


def test_rolling_batch_and_pass_empty_responses_reach_the_engine(stack, kafka, tmp_path, capsys):
    ns = stack
    f = tmp_path / "ext.yaml"
    f.write_text(PIPE.format(ns=ns))
    assert main(["pipeline", "load", "-f", str(f)]) == 0
    m = tmp_path / "m.yaml"
    m.write_text(models_yaml(f"{ns}-roll", f"{ns}-pass", f"{ns}-drop"))
    assert main(["model", "load", "-f", str(m)]) == 0  # PipelineReady waits for the step models too
    if main(["pipeline", "status", "ext", "-w", "PipelineReady", "-t", "90"]) != 0:
        pytest.fail("pipeline not ready; engine log:\n" + (tmp_path / "engine.log").read_text()[-3000:])
    # the scheduler carried both fields (PipelineStatus shows what the engine was sent)
    capsys.readouterr()
    assert main(["pipeline", "status", "ext"]) == 0
    assert '"rolling":true' in capsys.readouterr().out

    base = f"seldon.{ns}.model"
    sinks = {s: f"{base}.{ns}-{s}.inputs" for s in ("roll", "pass", "drop")}
    kafka.create_topics(*sinks.values())
    consumer = kafka.consumer()
    consumer.subscribe(list(sinks.values()))
    prod = kafka.producer()
    got = {s: [] for s in sinks}
    by_topic = {t: s for s, t in sinks.items()}

    # One one-row request at a time (value i) until two batches and two empty messages are seen.
    # Requests sent before the engine's consumer is assigned are lost (it starts at "latest"), so
    # the assertions look at consecutive batches, not at which request came first.
    deadline = time.monotonic() + 90
    i = 0
    while len(got["roll"]) < 2 or len(got["pass"]) < 2:
        assert time.monotonic() < deadline, f"engine output so far: {got}; engine log:\n" + \
            (tmp_path / "engine.log").read_text()[-3000:]
        i += 1
        req = oip.make_request({"INPUT": np.array([[float(i)]], dtype=np.float32)}, id=f"r{i}")
        prod.produce(f"seldon.{ns}.pipeline.ext.inputs", key=f"0.ext.r{i}", value=req.SerializeToString(),
                     headers=[("pipeline", b"ext"), ("x-request-id", f"r{i}".encode())])
        prod.flush(10)
        end = time.monotonic() + 0.4
        while time.monotonic() < end:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                got[by_topic[msg.topic()]].append(oip.parse_request(msg.value()))
    consumer.close()

    rows = [[float(v) for _, arr in oip.request_tensors(r) for v in arr.ravel()] for r in got["roll"]]
    first, second = rows[0], rows[1]
    assert len(first) == len(second) == 3, rows
    assert second[:2] == first[1:], f"not a sliding batch: {rows}"  # disjoint batches would not overlap
    assert all(not oip.has_tensors(r) for r in got["pass"])
    assert got["drop"] == [], "a step without passEmptyResponses forwarded an empty message"
