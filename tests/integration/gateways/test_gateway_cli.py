"""The gateway commands as processes: start, serve, stop on SIGTERM; user errors are one line."""
from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request

from tests.waiting import wait_until

from .harness import free_port


def _dataflow(*args, **kw):
    return [sys.executable, "-m", "dataflow_cli", *args]


def test_pipeline_gateway_process_serves_and_stops_on_sigterm(kafka):
    http, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(_dataflow("pipeline-gateway", "--no-scheduler", "--kafka", kafka.bootstrap,
                                      "--http-port", str(http), "--grpc-port", str(grpc_port), "--host", "127.0.0.1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/ready", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(ready, 60, "the pipeline gateway to be ready", interval=0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_user_errors_are_one_line():
    out = subprocess.run(_dataflow("model-gateway", "--kafka", "127.0.0.1:1"), capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert out.stderr.strip().startswith("Error: nothing to serve") and "Traceback" not in out.stderr
    out = subprocess.run(_dataflow("model-gateway", "--model", "oops"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "NAME=ENDPOINT" in out.stderr
    out = subprocess.run(_dataflow("pipeline", "infer", "p", "{not json"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not valid JSON" in out.stderr and "Traceback" not in out.stderr
