"""Two engine processes assigned the same pipeline version share its consumer group: both ack the
Create, the first reports Rebalance then Ready when the second joins, and they split the partitions
so every request is answered once."""
from __future__ import annotations

import numpy as np
import pytest

from dataflow import oip
from dataflow_testing.fake_chainer import FakeChainer
from tests.integration.engine.harness import EngineProcess, Msg, collect, create_message, new_namer, produce, step

pytestmark = pytest.mark.timeout(180)


def test_second_replica_triggers_rebalance_and_ready_acks(kafka, tmp_path):
    fake = FakeChainer().start()
    names = [kafka.unique("engine-a"), kafka.unique("engine-b")]
    engines = []
    try:
        engines.append(EngineProcess(fake.target, kafka, name=names[0], state_dir=str(tmp_path / "a"),
                                     log_path=str(tmp_path / "a.log"), extra=["--partitions", "2"]).start())
        fake.wait_subscribed(names[0], 60)
        n, p = new_namer(kafka), "shared"
        msg = create_message(p, [step(p, [n.pipeline_inputs(p)], n.model_inputs("m"))], n, timestamp=11)
        fake.send(msg)
        assert fake.wait_ack(lambda a: a.update.stream == names[0] and a.update.op == Msg.Create, 60).success
        engines.append(EngineProcess(fake.target, kafka, name=names[1], state_dir=str(tmp_path / "b"),
                                     log_path=str(tmp_path / "b.log"), extra=["--partitions", "2"]).start())
        fake.wait_subscribed(names[1], 60)  # the fake resends the Create to the new subscriber
        assert fake.wait_ack(lambda a: a.update.stream == names[1] and a.update.op == Msg.Create, 60).success
        rebalance = fake.wait_ack(lambda a: a.update.stream == names[0] and a.update.op == Msg.Rebalance, 60)
        ready = fake.wait_ack(lambda a: a.update.stream == names[0] and a.update.op == Msg.Ready, 60)
        assert rebalance.success and rebalance.reason == "pipeline data streams: rebalancing"
        assert ready.success and ready.reason == "pipeline data streams: ready"
        assert rebalance.update.timestamp == ready.update.timestamp == 11

        keys = [f"{i % 2}.shared.r{i}" for i in range(20)]
        value = oip.make_request({"X": np.asarray([1], dtype=np.int32)}).SerializeToString()
        produce(kafka, n.pipeline_inputs(p), [(k, value) for k in keys], pipeline=p)
        got = collect(kafka, n.model_inputs("m"), 20, settle_s=1.0)
        assert sorted(m.key().decode() for m in got) == sorted(keys)
        assert {m.partition() for m in got} == {0, 1}
    finally:
        for e in engines:
            e.stop()
        fake.stop()
