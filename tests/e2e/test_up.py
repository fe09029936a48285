"""``dataflow up`` as a user runs it: a subprocess that prints a ready line, answers the printed
request, and leaves no process behind after SIGINT."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dataflow_cli.demo.stack import PROBE_EXPECTED
from dataflow_cli.up import READY_LINE
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FREE_PORTS = ["--kafka-port", "0", "--scheduler-port", "0", "--chainer-port", "0",
              "--http-port", "0", "--grpc-port", "0", "--mlserver-http-port", "0",
              "--mlserver-grpc-port", "0", "--metrics-port", "0"]
STARTED = re.compile(r"^started (\S+) \(pid (\d+)\)")


class UpProcess:
    """``dataflow up`` in a subprocess whose stdout is collected line by line on a thread."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dataflow_cli", "up", *FREE_PORTS, *args], cwd=str(ROOT),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._output_ended = False
        self._changed = threading.Condition()  # a line was read, or the output ended
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._output_ended = True
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        def printed() -> bool:
            return any(text in line for line in self.lines)

        with self._changed:
            self._changed.wait_for(lambda: printed() or self._output_ended, timeout)
            if printed():
                return
        if self._output_ended:
            try:
                code = self.proc.wait(10)
            except subprocess.TimeoutExpired:
                code = None
            pytest.fail(f"dataflow up exited with {code}:\n{self.output}")
        pytest.fail(f"no {text!r} within {timeout}s:\n{self.output}")

    def child_pids(self) -> dict[str, int]:
        return {m.group(1): int(m.group(2)) for m in map(STARTED.match, self.lines) if m}

    def interrupt(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dataflow up still running {timeout}s after SIGINT:\n{self.output}")
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _assert_all_gone(pids: dict[str, int]) -> None:
    def alive() -> dict[str, int]:
        return {n: p for n, p in pids.items() if not _gone(p)}

    wait_until(lambda: not alive(), 10, "the children to end after dataflow up stopped",
               detail=lambda: f"still running: {alive()}")


def _curl_request(output: str) -> urllib.request.Request:
    """Rebuild the printed curl command as a request (URL, headers, body)."""
    line = next(line.strip() for line in output.splitlines() if line.strip().startswith("curl "))
    words = shlex.split(line)
    url = next(w for w in words if w.startswith("http://"))
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    body = words[words.index("-d") + 1]
    return urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")


def _scrape(url: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(s.name, *sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _run_printed(line: str) -> subprocess.CompletedProcess:
    """Run a printed ``[VAR=value ...] dataflow ...`` command line as the user would paste it."""
    words = shlex.split(line.split("#", 1)[0])
    env = dict(os.environ)
    while "=" in words[0]:
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    assert words[0] == "dataflow", line
    return subprocess.run([sys.executable, "-m", "dataflow_cli", *words[1:]], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=120)


def _check_printed_metrics_describe_and_top(up: UpProcess) -> None:
    """The printed metrics endpoints count the requests sent (per step and per model); the printed
    describe and top commands work."""
    def printed(prefix):
        return [line.split()[-1] for line in up.lines if line.strip().startswith(prefix)]
    [engine] = printed("engine metrics")
    [model_gw] = printed("model gw metrics")
    labels = [("pipeline", "tfsimples"), ("step", "tfsimple1"), ("version", "1")]
    before, before_gw = _scrape(engine), _scrape(model_gw)
    for _ in range(3):
        with urllib.request.urlopen(_curl_request(up.output), timeout=60) as response:
            assert response.status == 200
    after, after_gw = _scrape(engine), _scrape(model_gw)

    def grew(old, new, key):
        return new.get(key, 0) - old.get(key, 0)
    assert grew(before, after, ("dataflow_step_records_consumed_total", *labels)) == 3
    assert grew(before, after, ("dataflow_step_records_produced_total", *labels)) == 3
    out = ("dataflow_step_records_produced_total", ("pipeline", "tfsimples"), ("step", "output"), ("version", "1"))
    assert grew(before, after, out) == 3
    for model in ("tfsimple1", "tfsimple2"):
        key = ("dataflow_model_gateway_infer_total", ("model", model), ("outcome", "ok"))
        assert grew(before_gw, after_gw, key) == 3, model
    describe = next(line.strip() for line in up.lines if "dataflow pipeline describe" in line)
    done = _run_printed(describe)
    assert done.returncode == 0 and done.stdout.startswith("flowchart LR"), done.stderr
    top = next(line.strip() for line in up.lines if line.strip().startswith("dataflow pipeline top"))
    done = _run_printed(top + " --once --interval 0.5")
    assert done.returncode == 0, done.stderr
    assert any(line.split()[:3] == ["tfsimples", "1", "*"] for line in done.stdout.splitlines()), done.stdout


def test_up_without_pipelines_starts_and_stops_cleanly(tmp_path):
    """The supervision path: every available component starts, SIGINT stops them all."""
    up = UpProcess("--pipelines", "--state-dir", str(tmp_path / "state"), "--ready-timeout", "90")
    try:
        up.wait_for_line(READY_LINE, timeout=150)
        pids = up.child_pids()
        assert {"broker", "mlserver"} <= set(pids)
        assert up.interrupt() == 0, up.output
    finally:
        up.kill()
    assert "dataflow up: stopped" in up.output
    _assert_all_gone(pids)
    assert (tmp_path / "state" / "logs" / "mlserver.log").exists()  # --state-dir keeps logs


def test_up_bad_pipeline_file_fails_before_starting_anything(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: mlops.seldon.io/v1alpha1\nkind: Pipeline\nmetadata: {name: x}\n"
                   "spec: {steps: [{name: a, input: [b]}]}\n")
    up = UpProcess("--no-models", "--pipelines", str(bad), "--ready-timeout", "60")
    try:
        code = up.proc.wait(timeout=150)
        up._reader.join(5)
    finally:
        up.kill()
    assert code == 1, up.output
    assert "Traceback" not in up.output
    assert "Error:" in up.output and "bad.yaml" in up.output
    assert up.child_pids() == {}


def test_up_serves_the_printed_request_then_stops_everything():
    up = UpProcess("--ready-timeout", "150")
    try:
        up.wait_for_line(READY_LINE, timeout=300)
        pids = up.child_pids()
        assert {"broker", "mlserver", "scheduler", "engine", "model-gateway",
                "pipeline-gateway"} <= set(pids)
        with urllib.request.urlopen(_curl_request(up.output), timeout=60) as response:
            body = json.loads(response.read())
        outputs = {o["name"]: o["data"] for o in body["outputs"]}
        assert outputs == PROBE_EXPECTED
        # the printed CLI command gives the same answer
        printed = next(line.strip() for line in up.lines
                       if line.strip().startswith("dataflow pipeline infer"))
        words = shlex.split(printed)
        done = subprocess.run([sys.executable, "-m", "dataflow_cli", *words[1:]], cwd=str(ROOT),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        cli_body = json.loads(done.stdout)
        assert {o["name"]: o["data"] for o in cli_body["outputs"]} == PROBE_EXPECTED
        _check_printed_metrics_describe_and_top(up)
        assert up.interrupt() == 0, up.output
    finally:
        up.kill()
    _assert_all_gone(pids)


def test_up_interrupted_during_start_up_leaves_nothing_behind():
    up = UpProcess("--pipelines", "--ready-timeout", "90")
    try:
        up.wait_for_line("started mlserver", timeout=120)
        pids = up.child_pids()
        assert up.interrupt() == 0, up.output
    finally:
        up.kill()
    assert READY_LINE not in up.output
    _assert_all_gone(pids)


def _t(name, datatype, shape, data):
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


A16, ONES16, FOUR = list(range(1, 17)), [1] * 16, [1.0, 2.0, 3.0, 4.0]
# (pipeline, request inputs, expected HTTP status, expected {output name: data} or error text)
SAMPLE_REQUESTS = [
    ("tfsimple", [_t("INPUT0", "INT32", [1, 16], A16), _t("INPUT1", "INT32", [1, 16], ONES16)], 200,
     {"OUTPUT0": [a + 1 for a in A16], "OUTPUT1": [a - 1 for a in A16]}),
    ("tfsimples-input", [_t("INPUT0", "INT32", [1, 16], A16), _t("INPUT1", "INT32", [1, 16], ONES16)],
     200, {"OUTPUT0": [2 * a - 1 for a in A16], "OUTPUT1": ONES16}),
    ("join", [_t("INPUT0", "INT32", [1, 16], A16), _t("INPUT1", "INT32", [1, 16], ONES16)], 200,
     {"OUTPUT0": [2 * a for a in A16], "OUTPUT1": [2] * 16}),
    ("joincheck", [_t("INPUT0", "INT32", [1, 16], ONES16), _t("INPUT1", "INT32", [1, 16], ONES16)],
     200, {"OUTPUT0": [2] * 16, "OUTPUT1": [2] * 16}),
    ("tfsimple-conditional", [_t("CHOICE", "INT32", [1], [0]), _t("INPUT0", "FP32", [4], FOUR),
                              _t("INPUT1", "FP32", [4], FOUR)], 200, {"OUTPUT": [10.0, 20.0, 30.0, 40.0]}),
    ("tfsimple-conditional", [_t("CHOICE", "INT32", [1], [1]), _t("INPUT0", "FP32", [4], FOUR),
                              _t("INPUT1", "FP32", [4], FOUR)], 200, {"OUTPUT": [11.0, 12.0, 13.0, 14.0]}),
    ("choice", [_t("choice", "INT32", [1], [1]), _t("INPUT", "FP32", [4], [5, 6, 7, 8])], 200,
     {"OUTPUT": [50.0, 60.0, 70.0, 80.0]}),
    ("choice", [_t("choice", "INT32", [1], [2]), _t("INPUT", "FP32", [4], [5, 6, 7, 8])], 200,
     {"OUTPUT": [15.0, 16.0, 17.0, 18.0]}),
    ("trigger-joins", [_t("ok1", "FP32", [1], [1]), _t("INPUT", "FP32", [4], FOUR)], 200,
     {"OUTPUT": [10.0, 20.0, 30.0, 40.0]}),
    ("trigger-joins", [_t("ok3", "FP32", [1], [1]), _t("INPUT", "FP32", [4], FOUR)], 200,
     {"OUTPUT": [11.0, 12.0, 13.0, 14.0]}),
    ("triggers-join-internal", [_t("INPUT1", "INT64", [1], [1]), _t("INPUT2", "INT64", [1], [1]),
                                _t("TRIGGER2", "BOOL", [1], [True])], 200, {"OUTPUT1": [2]}),
    ("error", [_t("INPUT", "FP32", [4], FOUR)], 200, {"OUTPUT": FOUR}),
    ("error", [_t("INPUT", "FP32", [4], [100, 2, 3, 4])], 400,
     "outlier-error : rpc error: code = InvalidArgument desc = outlier detected"),
    ("outlier", [_t("INPUT", "FP32", [4], FOUR)], 200, {"OUTPUT": [11.0, 12.0, 13.0, 14.0]}),
    ("iris-pipeline", [_t("predict", "FP32", [1, 4], [6.7, 3.0, 5.2, 2.3])], 200, {"predict": [2]}),
    ("counter-pipeline", [_t("counter-pipeline.inputs", "INT32", [1], [0])], 200,
     {"output": [10], "stop": [""]}),
]


@pytest.mark.slow
def test_up_serves_every_sample_pipeline():
    files = sorted(str(p) for p in (ROOT / "examples" / "pipelines").glob("*.yaml"))
    up = UpProcess("--ready-timeout", "180", "--pipelines", *files)
    try:
        up.wait_for_line(READY_LINE, timeout=400)
        base = next(line.split()[2] for line in up.lines if "pipeline gateway" in line)
        failures = []
        for pipeline, inputs, status, expected in SAMPLE_REQUESTS:
            request = urllib.request.Request(
                f"{base}/v2/models/{pipeline}/infer", method="POST",
                data=json.dumps({"inputs": inputs}).encode(),
                headers={"Content-Type": "application/json", "seldon-model": f"{pipeline}.pipeline"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    got_status, body = response.status, json.loads(response.read())
            except urllib.error.HTTPError as exc:
                got_status, body = exc.code, exc.read().decode()
            if got_status != status:
                failures.append(f"{pipeline}: HTTP {got_status} {body}")
            elif isinstance(expected, str):
                if not str(body).startswith(expected):
                    failures.append(f"{pipeline}: error {body!r}")
            elif {o["name"]: o["data"] for o in body["outputs"]} != expected:
                failures.append(f"{pipeline}: outputs {body['outputs']}")
        assert not failures, "\n".join(failures)
        assert up.interrupt() == 0, up.output
    finally:
        up.kill()


def test_up_refuses_a_port_in_use():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "dataflow_cli", "up", *FREE_PORTS,
                               "--kafka-port", str(port)], cwd=str(ROOT), capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 1
    assert f"port {port} (--kafka-port)" in done.stderr and "Traceback" not in done.stderr
    assert "started" not in done.stdout


def test_up_no_models_starts_no_mlserver():
    up = UpProcess("--no-models", "--ready-timeout", "90")
    try:
        up.wait_for_line(READY_LINE, timeout=150)
        pids = up.child_pids()
        assert "mlserver" not in pids and "broker" in pids
        assert "loaded pipelines" not in up.output  # the samples need the sample models
        assert up.interrupt() == 0, up.output
    finally:
        up.kill()
    _assert_all_gone(pids)
