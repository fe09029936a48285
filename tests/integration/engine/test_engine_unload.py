"""Unloading pipelines gives back what loading them took: the engine's threads (librdkafka
clients, runner threads) return to their baseline once every version is deleted."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.pipelines import messages, proc_figures, wait_acks
from dataflow.engine.fake_scheduler import FakeChainer
from tests.integration.engine.harness import EngineProcess, Msg

pytestmark = pytest.mark.timeout(300)

COUNT = 20   # half chains, half joins


def thread_names(pid: int) -> list[str]:
    return sorted(p.read_text().strip() for p in Path(f"/proc/{pid}/task").glob("*/comm"))


def test_unloading_every_pipeline_releases_clients_and_threads(kafka, tmp_path):
    fake = FakeChainer().start()
    name = kafka.unique("engine")
    engine = EngineProcess(fake.target, kafka, name=name, state_dir=str(tmp_path / "state"),
                           log_path=str(tmp_path / "engine.log")).start()
    try:
        fake.wait_subscribed(name, 60)
        _, baseline, _ = proc_figures(engine.proc.pid)
        msgs = messages(COUNT, kafka.unique("unload"))
        for m in msgs:
            fake.send(m)
        _, failed = wait_acks(fake, {m.uid for m in msgs}, Msg.Create, 180)
        assert failed == 0, engine.log_tail()
        _, loaded, _ = proc_figures(engine.proc.pid)
        assert loaded > baseline + COUNT          # each version runs clients of its own
        assert any(n.startswith("rdk:") for n in thread_names(engine.proc.pid))
        for m in msgs:
            fake.send(Msg(op=Msg.Delete, pipeline=m.pipeline, version=m.version, uid=m.uid, timestamp=2))
        _, failed = wait_acks(fake, {m.uid for m in msgs}, Msg.Delete, 120)
        assert failed == 0, engine.log_tail()
        deadline = time.monotonic() + 30
        while any(n.startswith("rdk:") for n in thread_names(engine.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        _, after, _ = proc_figures(engine.proc.pid)
        names = thread_names(engine.proc.pid)
        assert not [n for n in names if n.startswith("rdk:")], names     # no Kafka client is left
        # what may stay is per process, not per pipeline: RocksDB's two background threads, idle
        # workers of the asyncio executor and gRPC's pool
        assert after <= baseline + 8, (baseline, loaded, after, names)
    finally:
        assert engine.stop() == 0, engine.log_tail()
        fake.stop()
