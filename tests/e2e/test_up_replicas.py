"""Scale-out as a user runs it: ``dataflow up --engines 2 --partitions 4`` shares every pipeline's
partitions between two engine replicas; stopping one moves its partitions to the other without
losing a request. Prints the request throughput with two replicas and then with one."""
from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dataflow_cli.demo.stack import PROBE_EXPECTED, PROBE_PIPELINE, PROBE_REQUEST
from dataflow_cli.up import READY_LINE
from tests.e2e.test_up import UpProcess
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REQUESTS = 160
CLIENTS = 8
RUNS = re.compile(rf"pipeline {PROBE_PIPELINE} v\d+: partitions .*; this replica now runs partitions (\[[\d, ]*\])")


def banner_value(up: UpProcess, label: str) -> str:
    line = next(line for line in up.lines if line.strip().startswith(label))
    return line.strip()[len(label):].split()[0]


def infer(url: str) -> dict:
    request = urllib.request.Request(
        f"{url}/v2/models/{PROBE_PIPELINE}/infer", data=json.dumps(PROBE_REQUEST).encode(), method="POST",
        headers={"Content-Type": "application/json", "seldon-model": f"{PROBE_PIPELINE}.pipeline"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def load(url: str) -> float:
    """Requests/s for REQUESTS requests from CLIENTS concurrent clients; every answer is checked."""
    start = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        bodies = list(pool.map(lambda _: infer(url), range(REQUESTS)))
    took = time.monotonic() - start
    for body in bodies:
        assert {o["name"]: o["data"] for o in body["outputs"]} == PROBE_EXPECTED
    return REQUESTS / took


def running_partitions(logs: Path, engine: str) -> list[int] | None:
    """The partitions of the sample pipeline an engine replica last said it runs (its log)."""
    path = logs / f"{engine}.log"
    lines = [m for m in RUNS.finditer(path.read_text(errors="replace"))] if path.exists() else []
    return json.loads(lines[-1].group(1)) if lines else None


def test_two_engine_replicas_share_partitions_and_survive_losing_one(tmp_path):
    up = UpProcess("--engines", "2", "--partitions", "4", "--ready-timeout", "150",
                   "--state-dir", str(tmp_path), "--component-log-level", "INFO")
    logs = tmp_path / "logs"
    try:
        up.wait_for_line(READY_LINE, timeout=300)
        pids = up.child_pids()
        assert {"engine-1", "engine-2"} <= set(pids), up.output
        assert re.search(r"dataflow engines\s+2 replicas sharing 4 partition", up.output)
        url = banner_value(up, "pipeline gateway")

        def shares():
            parts = [running_partitions(logs, e) for e in ("engine-1", "engine-2")]
            return parts if all(parts) else None

        # both replicas run the pipeline, each a disjoint share of its partitions
        first, second = wait_until(shares, 60, "both replicas to run partitions")
        assert sorted(first + second) == [0, 1, 2, 3], (first, second)
        two = load(url)

        os.kill(pids["engine-2"], signal.SIGTERM)     # its partitions move to engine-1 ...
        load(url)                                     # ... while requests keep coming: all answered
        wait_until(lambda: running_partitions(logs, "engine-1") == [0, 1, 2, 3], 60,
                   "engine-1 to take every partition")
        one = load(url)
        print(f"\n{PROBE_PIPELINE}: {two:.0f} req/s with 2 engine replicas, {one:.0f} req/s with 1 "
              f"({REQUESTS} requests, {CLIENTS} clients, REST)")
        assert up.interrupt() == 0, up.output
    finally:
        up.kill()
