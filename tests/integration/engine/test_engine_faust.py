"""Smoke test: the engine process drives the Faust runtime (``--runtime faust``) through the same
Create / Delete lifecycle and acks as the default kafka runtime."""
from __future__ import annotations

import numpy as np
import pytest

from dataflow import oip
from dataflow_testing.fake_chainer import FakeChainer, ack_for
from tests.integration.engine.harness import (
    EngineProcess,
    Msg,
    collect,
    create_message,
    delete_message,
    deploy,
    new_namer,
    produce,
    step,
)

pytestmark = pytest.mark.timeout(180)


def test_engine_with_faust_runtime_runs_and_deletes_a_pipeline(kafka, tmp_path):
    fake = FakeChainer().start()
    name = kafka.unique("engine")
    engine = EngineProcess(fake.target, kafka, name=name, state_dir=str(tmp_path / "state"),
                           log_path=str(tmp_path / "engine.log"), extra=["--runtime", "faust"]).start()
    try:
        fake.wait_subscribed(name, 60)
        n, p = new_namer(kafka), "fchain"
        msg = create_message(p, [step(p, [n.model_outputs("m1")], n.model_inputs("m2"),
                                      tensor_map={f"{n.model_outputs('m1')}.OUTPUT0": "INPUT0"})], n)
        deploy(fake, engine, msg, timeout_s=90)
        value = oip.make_response({"OUTPUT0": np.asarray([1, 2], dtype=np.int32)}).SerializeToString()
        produce(kafka, n.model_outputs("m1"), [("0.fchain.r", value)], pipeline=p)
        [out] = collect(kafka, n.model_inputs("m2"), 1, timeout_s=30)
        assert list(oip.request_arrays(oip.parse_request(out.value()))) == ["INPUT0"]
        fake.send(delete_message(msg))
        ack = fake.wait_ack(ack_for(msg.uid, Msg.Delete), 60)
        assert ack.success and ack.reason == "pipeline removed"
    finally:
        rc = engine.stop()
        fake.stop()
    assert rc == 0, engine.log_tail()
