"""The engine process with ``--runtime faust``: a pipeline deployed through the (fake) scheduler,
pending joins surviving a SIGKILL of the engine (its Faust workers die with it), restart with the
same name and state dir, and a Delete that stops the worker."""
from __future__ import annotations

import os

import numpy as np
import pytest

from dataflow import oip
from dataflow.kafka import dataflow_group_id
from dataflow.runtime.changelog import changelog_topic
from dataflow_testing.fake_chainer import FakeChainer, ack_for
from tests.integration.engine.harness import (
    EngineProcess,
    Msg,
    collect,
    create_message,
    delete_message,
    new_namer,
    produce,
    step,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(240)


def resp(name: str, value: int) -> bytes:
    return oip.make_response({name: np.asarray([value], dtype=np.int32)}).SerializeToString()


def faust_workers_of(engine: EngineProcess) -> list[int]:
    """Pids of the Faust worker processes whose parent is ``engine``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == engine.proc.pid and b"dataflow.runtime.faust_worker" in cmdline:
            pids.append(int(entry))
    return pids


def wait_gone(pids: list[int], what: str, timeout_s: float = 15.0) -> None:
    wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") and _not_zombie(pid) for pid in pids),
               timeout_s, what)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_faust_engine_pending_joins_survive_sigkill_and_delete_stops_worker(kafka, tmp_path):
    fake = FakeChainer().start()
    n, p = new_namer(kafka), "fcrash"
    a, b, sink = n.model_outputs("a"), n.model_outputs("b"), n.model_inputs("j")
    msg = create_message(p, [step(p, [a, b], sink, join_window_ms=120_000)], n)
    name = kafka.unique("fengine")

    def engine_process(log: str) -> EngineProcess:
        return EngineProcess(fake.target, kafka, name=name, state_dir=str(tmp_path / "state"),
                             log_path=str(tmp_path / log), extra=["--runtime", "faust"]).start()

    first = engine_process("first.log")
    second = None
    try:
        fake.send(msg)
        ack = fake.wait_ack(ack_for(msg.uid, Msg.Create), 90)
        assert ack.success, first.log_tail()
        workers = faust_workers_of(first)
        assert len(workers) == 1, workers
        keys = [f"0.fcrash.k{i}" for i in range(10)]
        produce(kafka, a, [(k, resp("A", i)) for i, k in enumerate(keys)], pipeline=p)
        # processed and checkpointed: the pending joins are in the version's changelog
        changelog = changelog_topic(dataflow_group_id(msg.uid))
        assert len(collect(kafka, changelog, 10, timeout_s=60)) >= 10, first.log_tail()
        first.kill()
        wait_gone(workers, "the Faust worker to end with its engine")

        second = engine_process("second.log")
        fake.wait_subscribed(name, 60, count=2)
        fake.wait_ack(lambda ack: ack.update.uid == msg.uid and ack.update.op == Msg.Create
                      and len(fake.acks_for(msg.uid, Msg.Create)) >= 2, 120)
        assert all(x.success for x in fake.acks_for(msg.uid, Msg.Create)), second.log_tail()
        produce(kafka, b, [(k, resp("B", i)) for i, k in enumerate(keys)], pipeline=p)
        got = collect(kafka, sink, 10, timeout_s=60)
        assert {m.key().decode() for m in got} == set(keys), second.log_tail()
        for m in got:
            assert list(oip.request_arrays(oip.parse_request(m.value()))) == ["A", "B"]

        workers = faust_workers_of(second)
        assert len(workers) == 1, workers
        delete = delete_message(msg)
        fake.send(delete)
        assert fake.wait_ack(ack_for(msg.uid, Msg.Delete), 60).success, second.log_tail()
        wait_gone(workers, "Delete to stop the Faust worker")
    finally:
        first.kill()
        if second is not None:
            assert second.stop() == 0, second.log_tail()
        fake.stop()
