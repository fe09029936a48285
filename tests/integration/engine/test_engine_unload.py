"""Unloading pipelines gives back what loading them took: the engine's threads (librdkafka
clients, poll threads) return to their baseline once every version is deleted, and most of the
memory they took is returned."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.pipelines import proc_figures
from dataflow.kafka import TopicNamer
from dataflow_testing.fake_chainer import FakeChainer
from scheduler_min.convert import pipeline_message
from tests.integration.engine.harness import EngineProcess, Msg
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(300)

COUNT = 20   # half chains, half joins


def messages(count: int, stem: str) -> list[Msg]:
    """``count`` Create messages, alternately a 2-step chain and a 2-way join, each in its own topics."""
    namer = TopicNamer(prefix=stem, namespace="default")
    out = []
    for i in range(count):
        name = f"p{i}"
        if i % 2:
            spec = {"name": name, "steps": [{"name": f"{name}a"}, {"name": f"{name}b"},
                                            {"name": f"{name}j", "inputs": [f"{name}a", f"{name}b"]}]}
        else:
            spec = {"name": name, "steps": [{"name": f"{name}m1"}, {"name": f"{name}m2", "inputs": [f"{name}m1"],
                                            "tensorMap": {f"{name}m1.outputs.OUTPUT0": "INPUT0"}}]}
        out.append(pipeline_message(spec, uid=f"{stem}-{i:04d}", namer=namer, timestamp=1))
    return out


def wait_acks(fake, uids: set[str], op: int, timeout_s: float) -> tuple[float, int]:
    """Seconds until every uid has an ack for ``op``; and how many failed."""
    start = time.monotonic()

    def acked() -> dict[str, bool]:
        return {a.update.uid: a.success for a in list(fake.acks) if a.update.op == op and a.update.uid in uids}

    def all_acked() -> dict[str, bool] | None:
        got = acked()
        return got if len(got) == len(uids) else None

    acks = wait_until(all_acked, timeout_s, f"acks for op {op}",
                      detail=lambda: f"only {len(acked())} of {len(uids)}", interval=0.1)
    return time.monotonic() - start, sum(1 for ok in acks.values() if not ok)


def load_and_unload(fake, msgs: list[Msg], engine) -> None:
    for m in msgs:
        fake.send(m)
    assert wait_acks(fake, {m.uid for m in msgs}, Msg.Create, 180)[1] == 0, engine.log_tail()
    for m in msgs:
        fake.send(Msg(op=Msg.Delete, pipeline=m.pipeline, version=m.version, uid=m.uid, timestamp=2))
    assert wait_acks(fake, {m.uid for m in msgs}, Msg.Delete, 120)[1] == 0, engine.log_tail()


def thread_names(pid: int) -> list[str]:
    return sorted(p.read_text().strip() for p in Path(f"/proc/{pid}/task").glob("*/comm"))


def test_unloading_every_pipeline_releases_clients_and_threads(kafka, tmp_path):
    fake = FakeChainer().start()
    name = kafka.unique("engine")
    engine = EngineProcess(fake.target, kafka, name=name, state_dir=str(tmp_path / "state"),
                           log_path=str(tmp_path / "engine.log")).start()
    try:
        fake.wait_subscribed(name, 60)
        # The first pipelines import the code they need (modules stay loaded): measure after one
        # load/unload round, so that the comparison is of what pipelines hold, not of imports.
        load_and_unload(fake, messages(2, kafka.unique("warmup")), engine)
        rss_base, baseline, _ = proc_figures(engine.proc.pid)
        msgs = messages(COUNT, kafka.unique("unload"))
        for m in msgs:
            fake.send(m)
        _, failed = wait_acks(fake, {m.uid for m in msgs}, Msg.Create, 180)
        assert failed == 0, engine.log_tail()
        rss_loaded, loaded, _ = proc_figures(engine.proc.pid)
        assert loaded > baseline + COUNT          # each version runs clients of its own
        assert any(n.startswith("rdk:") for n in thread_names(engine.proc.pid))
        for m in msgs:
            fake.send(Msg(op=Msg.Delete, pipeline=m.pipeline, version=m.version, uid=m.uid, timestamp=2))
        _, failed = wait_acks(fake, {m.uid for m in msgs}, Msg.Delete, 120)
        assert failed == 0, engine.log_tail()
        # Kafka clients go at once; the shared poll threads and the parking watcher shortly after
        # their last pipeline.
        transient = ("rdk:", "poll-loop", "kafka-parking")
        wait_until(lambda: not any(n.startswith(transient) for n in thread_names(engine.proc.pid)), 30,
                   "the Kafka client threads to end", detail=lambda: str(thread_names(engine.proc.pid)), interval=0.2)
        rss_after, after, _ = proc_figures(engine.proc.pid)
        names = thread_names(engine.proc.pid)
        assert not [n for n in names if n.startswith(transient)], names     # no Kafka client is left
        # what may stay is per process, not per pipeline: RocksDB's two background threads, idle
        # workers of the asyncio executor and gRPC's pool
        assert after <= baseline + 8, (baseline, loaded, after, names)
        print(f"RSS MB: baseline {rss_base:.0f}, loaded {rss_loaded:.0f}, unloaded {rss_after:.0f}")
        assert rss_after - rss_base <= 0.5 * (rss_loaded - rss_base), (rss_base, rss_loaded, rss_after)
    finally:
        assert engine.stop() == 0, engine.log_tail()
        fake.stop()
