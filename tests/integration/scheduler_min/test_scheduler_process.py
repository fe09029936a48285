"""`dataflow scheduler` as a process, driven by `dataflow pipeline ...` processes, with a fake engine."""
import os
import re
import signal
import subprocess
import sys

import pytest

from dataflow_testing.fake_engine import FakeEngine
from tests.manifests import models_yaml

PIPE = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: proc
spec:
  steps:
    - name: proc-m1
  output:
    steps: [proc-m1]
"""


def cli(env, *argv):
    return subprocess.run([sys.executable, "-m", "dataflow_cli", *argv], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def scheduler(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "dataflow_cli", "scheduler", "--host", "127.0.0.1",
                             "--port", "0", "--chainer-port", "0", "--state-dir", str(tmp_path / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()
    assert line.startswith("scheduler ready:"), line + proc.stderr.read()
    port, chainer_port = re.search(r"scheduler port (\d+), chainer port (\d+)", line).groups()
    yield proc, f"127.0.0.1:{port}", f"127.0.0.1:{chainer_port}"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_scheduler_process_with_cli(scheduler, tmp_path):
    proc, address, chainer = scheduler
    env = {**os.environ, "SELDON_SCHEDULE_HOST": address, "DATAFLOW_CLI_CONFIG": str(tmp_path / "none.json")}
    f = tmp_path / "p.yaml"
    f.write_text(PIPE)
    engine = FakeEngine(chainer, "engine-proc")
    try:
        r = cli(env, "pipeline", "load", "-f", str(f))
        assert (r.returncode, r.stderr) == (0, "")
        m = tmp_path / "m.yaml"
        m.write_text(models_yaml("proc-m1"))
        r = cli(env, "model", "load", "-f", str(m))  # PipelineReady waits for the step models too
        assert (r.returncode, r.stderr) == (0, "")
        r = cli(env, "pipeline", "status", "proc", "-w", "PipelineReady", "-t", "30")
        assert r.returncode == 0 and '"PipelineReady"' in r.stdout
        bad = tmp_path / "bad.yaml"
        bad.write_text(PIPE.replace("steps: [proc-m1]", "steps: [nope]"))
        r = cli(env, "pipeline", "load", "-f", str(bad))
        assert (r.returncode, r.stderr) == (1, "Error: pipeline proc output step nope not found\n")
    finally:
        engine.close()
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(15) == 0
    assert "scheduler stopped" in proc.stdout.read()
