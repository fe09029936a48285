"""The engine configured the way a Seldon Core 2 chart configures the reference engine: no flags,
only ``SELDON_*`` variables. It must find the scheduler and Kafka, subscribe under the replica id,
serve health on the given port, and name its consumer groups with the prefix and namespace."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from dataflow import oip
from dataflow.broker import free_port
from dataflow.kafka import dataflow_group_id
from dataflow_testing.fake_chainer import FakeChainer
from tests.integration.engine.harness import (
    REPO_ROOT,
    collect,
    committed_offset,
    create_message,
    deploy,
    new_namer,
    produce,
    step,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

DEFAULT_STATE_ROOT = "/tmp/dataflow-engine/state"  # the engine's default state dir: no flag given


class EnvEngine:
    """``python -m dataflow_cli engine`` with no arguments and exactly ``env``."""

    def __init__(self, env: dict[str, str], log_path: str):
        self.env, self.log_path, self.proc = env, log_path, None

    def start(self) -> EnvEngine:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "dataflow_cli", "engine"], cwd=REPO_ROOT,
                                         env=self.env, stdout=log, stderr=log, start_new_session=True)
        return self

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        with open(self.log_path, errors="replace") as f:
            return "\n".join(f.read().splitlines()[-lines:])



def req(**tensors) -> bytes:
    return oip.make_request({k: np.asarray(v, dtype=np.int32) for k, v in tensors.items()}).SerializeToString()


def test_engine_runs_from_a_reference_style_environment_alone(kafka, tmp_path):
    fake = FakeChainer().start()
    host, port = fake.target.rsplit(":", 1)
    replica, health = kafka.unique("seldon-dataflow-engine"), free_port()
    n, p = new_namer(kafka), "envchain"
    prefix = "acme"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SELDON_UPSTREAM_HOST": host,
        "SELDON_UPSTREAM_PORT": port,
        "SELDON_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "SELDON_POD_NAMESPACE": n.namespace,
        "SELDON_KAFKA_CONSUMER_PREFIX": prefix,
        "SELDON_DATAFLOW_REPLICA_ID": replica,
        "SELDON_KAFKA_PARTITIONS_DEFAULT": "1",
        "SELDON_KAFKA_REPLICATION_FACTOR": "1",
        "SELDON_KAFKA_JOIN_WINDOW_MILLIS": "60000",
        "SELDON_KAFKA_MAX_MESSAGE_SIZE_BYTES": "1000000000",
        "SELDON_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        # What the reference's chart sets for an unsecured cluster: must all be harmless.
        "SELDON_KAFKA_TLS_CLIENT_SECRET": "", "SELDON_KAFKA_TLS_ENDPOINT_IDENTIFICATION_ALGORITHM": "",
        "SELDON_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "SELDON_KAFKA_SASL_USERNAME": "seldon",
        "SELDON_KAFKA_SASL_SECRET": "", "SELDON_KAFKA_SASL_PASSWORD_PATH": "password",
        "SELDON_PIPELINE_CTLOPS_THREADS": "8",
        "SELDON_HEALTH_SERVER_PORT": str(health),
    }
    engine = EnvEngine(env, str(tmp_path / "engine.log")).start()
    try:
        fake.wait_subscribed(replica, 60)
        msg = create_message(p, [step(p, [n.pipeline_inputs(p)], n.model_inputs("m1"))], n)
        deploy(fake, engine, msg)
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/live", timeout=5) as r:
            assert r.status == 200

        produce(kafka, n.pipeline_inputs(p), [(f"0.{p}.r{i}", req(INPUT0=[[i]])) for i in range(3)], pipeline=p)
        assert len(collect(kafka, n.model_inputs("m1"), 3)) == 3

        group = dataflow_group_id(msg.uid, prefix, n.namespace)
        assert group.startswith(f"{prefix}-{n.namespace}-seldon-dataflow-")
        wait_until(lambda: committed_offset(kafka, group, n.pipeline_inputs(p)) >= 3, 30, "three records committed",
                   detail=engine.log_tail, interval=0.2)
        assert committed_offset(kafka, group, n.pipeline_inputs(p)) == 3, engine.log_tail()
        assert committed_offset(kafka, dataflow_group_id(msg.uid), n.pipeline_inputs(p)) < 0  # nothing unprefixed
    finally:
        rc = engine.stop()
        fake.stop()
        shutil.rmtree(os.path.join(DEFAULT_STATE_ROOT, replica), ignore_errors=True)
    assert rc == 0, engine.log_tail()
