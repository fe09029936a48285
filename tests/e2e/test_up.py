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
import time
import urllib.request
from pathlib import Path

import pytest

from dataflow.cli.up import READY_LINE
from dataflow.up.stack import PROBE_EXPECTED, cli_options

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
            [sys.executable, "-m", "dataflow.cli", "up", *FREE_PORTS, *args], cwd=str(ROOT),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"dataflow up exited with {self.proc.returncode}:\n{self.output}")
            time.sleep(0.2)
        pytest.fail(f"no {text!r} within {timeout}s:\n{self.output}")

    def child_pids(self) -> dict[str, int]:
        return {m.group(1): int(m.group(2)) for m in map(STARTED.match, self.lines) if m}

    def interrupt(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
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
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = {n: p for n, p in alive.items() if not _gone(p)}
        time.sleep(0.2)
    assert not alive, f"children still running after dataflow up stopped: {alive}"


def _curl_request(output: str) -> urllib.request.Request:
    """Rebuild the printed curl command as a request (URL, headers, body)."""
    line = next(line.strip() for line in output.splitlines() if line.strip().startswith("curl "))
    words = shlex.split(line)
    url = next(w for w in words if w.startswith("http://"))
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    body = words[words.index("-d") + 1]
    return urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")


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


@pytest.mark.skipif(any(cli_options(c) is None for c in
                        ("scheduler", "engine", "model-gateway", "pipeline-gateway")),
                    reason="needs the scheduler, engine and both gateways")
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
