"""The engine process end to end over the embedded broker: a fake scheduler pushes Create messages
built as the scheduler builds them, model outputs are simulated by producing to model output topics, and the
engine (``dataflow engine`` subprocess, kafka runtime, real topology) must route them as the
reference does. One engine process serves the whole module."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient

from dataflow import oip
from dataflow_testing.fake_chainer import FakeChainer, ack_for
from tests.integration.engine.harness import (
    EngineProcess,
    Msg,
    Step,
    collect,
    create_message,
    delete_message,
    deploy,
    header,
    new_namer,
    produce,
    step,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def env(kafka, tmp_path_factory):
    fake = FakeChainer().start()
    tmp = tmp_path_factory.mktemp("engine")
    name = kafka.unique("engine")
    engine = EngineProcess(fake.target, kafka, name=name, state_dir=str(tmp / "state"),
                           log_path=str(tmp / "engine.log"), extra=["--join-window-ms", "2000"]).start()
    try:
        fake.wait_subscribed(name, 60)
        yield fake, engine
    finally:
        rc = engine.stop()
        fake.stop()
        assert rc == 0, f"engine did not stop cleanly (rc={rc})\n{engine.log_tail()}"


def req(**tensors) -> bytes:
    return oip.make_request({k: np.asarray(v, dtype=np.int32) for k, v in tensors.items()}).SerializeToString()


def resp(**tensors) -> bytes:
    return oip.make_response({k: np.asarray(v, dtype=np.int32) for k, v in tensors.items()}).SerializeToString()


def request_of(msg) -> dict:
    return {k: v.tolist() for k, v in oip.request_arrays(oip.parse_request(msg.value())).items()}


def response_of(msg) -> dict:
    return {k: v.tolist() for k, v in oip.response_arrays(oip.parse_response(msg.value())).items()}


def test_two_step_chain_with_tensor_map(env, kafka):
    fake, engine = env
    n, p = new_namer(kafka), "chain"
    msg = create_message(p, [
        step(p, [n.pipeline_inputs(p)], n.model_inputs("m1")),
        step(p, [n.model_outputs("m1")], n.model_inputs("m2"),
             tensor_map={f"{n.model_outputs('m1')}.OUTPUT0": "INPUT0"}),
        step(p, [n.model_outputs("m2")], n.pipeline_outputs(p), join_window_ms=0),
    ], n)
    deploy(fake, engine, msg)
    produce(kafka, n.pipeline_inputs(p), [("0.chain.r1", req(INPUT0=[[1, 2]]))], pipeline=p,
            headers=[("x-request-id", b"r1")])
    [m1_in] = collect(kafka, n.model_inputs("m1"), 1)
    assert m1_in.key() == b"0.chain.r1" and request_of(m1_in) == {"INPUT0": [[1, 2]]}
    assert header(m1_in, "x-request-id") == b"r1" and header(m1_in, "x-pipeline-version") == b"1"

    produce(kafka, n.model_outputs("m1"), [("0.chain.r1", resp(OUTPUT0=[[3, 4]], OUTPUT1=[[5, 6]]))], pipeline=p)
    [m2_in] = collect(kafka, n.model_inputs("m2"), 1)
    assert request_of(m2_in) == {"INPUT0": [[3, 4]], "OUTPUT1": [[5, 6]]}

    produce(kafka, n.model_outputs("m2"), [("0.chain.r1", resp(OUT=[[7]]))], pipeline=p)
    [out] = collect(kafka, n.pipeline_outputs(p), 1)
    assert response_of(out) == {"OUT": [[7]]} and header(out, "pipeline") == p.encode()


def test_records_of_other_pipelines_are_ignored(env, kafka):
    fake, engine = env
    n, p = new_namer(kafka), "filter"
    deploy(fake, engine, create_message(p, [step(p, [n.pipeline_inputs(p)], n.model_inputs("m"))], n))
    produce(kafka, n.pipeline_inputs(p), [("0.x.1", req(A=[1]))], pipeline="someone-else")
    produce(kafka, n.pipeline_inputs(p), [("0.x.2", req(A=[2]))], pipeline=p)
    got = collect(kafka, n.model_inputs("m"), 1, settle_s=0.5)
    assert [m.key() for m in got] == [b"0.x.2"]


def test_three_way_inner_join(env, kafka):
    fake, engine = env
    n, p = new_namer(kafka), "join3"
    a, b, c = (n.model_outputs(x) for x in "abc")
    deploy(fake, engine, create_message(p, [step(p, [a, b, c], n.model_inputs("j"))], n))
    produce(kafka, b, [("0.join3.k", resp(B=[2]))], pipeline=p)
    produce(kafka, a, [("0.join3.k", resp(A=[1]))], pipeline=p)
    produce(kafka, c, [("0.join3.k", resp(C=[3]))], pipeline=p)
    [joined] = collect(kafka, n.model_inputs("j"), 1, settle_s=0.5)
    assert list(request_of(joined).items()) == [("A", [1]), ("B", [2]), ("C", [3])]


def test_outer_join_answers_when_a_branch_never_arrives(env, kafka):
    fake, engine = env
    n, p = new_namer(kafka), "outer"
    a, b = n.model_outputs("a"), n.model_outputs("b")
    deploy(fake, engine, create_message(p, [
        step(p, [a, b], n.pipeline_outputs(p), join=Step.Outer, join_window_ms=500)], n))
    produce(kafka, a, [("0.outer.k", resp(A=[1]))], pipeline=p)
    [out] = collect(kafka, n.pipeline_outputs(p), 1, timeout_s=10)
    assert response_of(out) == {"A": [1]}


def test_any_join_forwards_the_first_branch(env, kafka):
    fake, engine = env
    n, p = new_namer(kafka), "anyj"
    a, b = n.model_outputs("a"), n.model_outputs("b")
    deploy(fake, engine, create_message(p, [step(p, [a, b], n.model_inputs("m"), join=Step.Any)], n))
    produce(kafka, b, [("0.anyj.k", resp(B=[2]))], pipeline=p)
    got = collect(kafka, n.model_inputs("m"), 1)
    assert request_of(got[0]) == {"B": [2]}


def test_trigger_gates_the_step(env, kafka):
    fake, engine = env
    n, p = new_namer(kafka), "trig"
    src = n.pipeline_inputs(p)
    deploy(fake, engine, create_message(p, [
        step(p, [(src, "INPUT")], n.model_inputs("m"), triggers=[(src, "ok")], join_window_ms=1000)], n))
    produce(kafka, src, [("0.trig.no", req(INPUT=[1])), ("0.trig.yes", req(INPUT=[2], ok=[1]))], pipeline=p)
    got = collect(kafka, n.model_inputs("m"), 1, settle_s=1.0)
    assert [m.key() for m in got] == [b"0.trig.yes"]
    assert request_of(got[0]) == {"INPUT": [2]}


def test_batch_by_size_and_by_window(env, kafka):
    fake, engine = env
    n, p = new_namer(kafka), "batch"
    src = n.pipeline_inputs(p)
    deploy(fake, engine, create_message(p, [
        step(p, [src], n.model_inputs("sized"), batch=(3, None)),
        step(p, [src], n.model_inputs("timed"), batch=(10, 500)),
    ], n))
    produce(kafka, src, [(f"0.batch.{i}", req(X=[[i, i]])) for i in range(3)], pipeline=p)
    [sized] = collect(kafka, n.model_inputs("sized"), 1)
    assert request_of(sized) == {"X": [[0, 0], [1, 1], [2, 2]]}
    assert sized.key() == b"0.batch.2"  # the record that completed the batch
    [timed] = collect(kafka, n.model_inputs("timed"), 1, timeout_s=10)
    assert request_of(timed) == {"X": [[0, 0], [1, 1], [2, 2]]}


def test_pipeline_to_pipeline_chaining(env, kafka):
    fake, engine = env
    n = new_namer(kafka)
    up, down = "up", "down"
    deploy(fake, engine, create_message(up, [step(up, [n.pipeline_inputs(up)], n.pipeline_outputs(up))], n))
    deploy(fake, engine, create_message(down, [
        step(down, [(up, n.pipeline_outputs(up), None)], n.pipeline_inputs(down)),   # input step
        step(down, [n.pipeline_inputs(down)], n.model_inputs("m")),
    ], n))
    produce(kafka, n.pipeline_inputs(up), [("0.up.r", req(T=[9]))], pipeline=up)
    [m_in] = collect(kafka, n.model_inputs("m"), 1)
    assert m_in.key() == b"0.up.r" and header(m_in, "pipeline") == b"down"
    assert request_of(m_in) == {"T": [9]}


def test_cycle_is_stopped_by_max_step_revisits(env, kafka):
    fake, engine = env
    n, p = new_namer(kafka), "loop"
    x_in, x_out = n.model_inputs("x"), n.model_outputs("x")
    deploy(fake, engine, create_message(p, [
        step(p, [n.pipeline_inputs(p)], x_in),
        step(p, [x_out], x_in),          # x feeds itself: a cycle
    ], n, allow_cycles=True, max_step_revisits=2))
    produce(kafka, n.pipeline_inputs(p), [("0.loop.r", req(V=[1]))], pipeline=p)
    seen = 0
    for _ in range(10):  # act as model x: echo every request back as a response
        got = collect(kafka, x_in, seen + 1, timeout_s=5)
        if len(got) <= seen:
            break
        for m in got[seen:]:
            produce(kafka, x_out, [(m.key().decode(), resp(V=[1]))], pipeline=p)
        seen = len(got)
    [err] = collect(kafka, n.pipeline_outputs(p), 1, timeout_s=10)
    assert err.value().startswith(b"ERROR: Max step revisits (2) exceeded for request 0.loop.r")
    assert header(err, "seldon-pipeline-errors") == p.encode()
    assert seen == 3  # first visit + 2 revisits


def test_error_record_reaches_the_pipeline_output(env, kafka):
    fake, engine = env
    n, p = new_namer(kafka), "errs"
    deploy(fake, engine, create_message(p, [step(p, [n.pipeline_inputs(p)], n.model_inputs("m"))], n))
    produce(kafka, n.errors(), [("0.errs.r", b"model m failed: boom")], pipeline=p,
            headers=[("seldon-pipeline-errors", b"m")])
    [out] = collect(kafka, n.pipeline_outputs(p), 1)
    assert out.key() == b"0.errs.r" and out.value() == b"model m failed: boom"
    assert header(out, "seldon-pipeline-errors") == b"m"


def test_creating_and_deleting_another_pipeline_does_not_stall_a_running_one(env, kafka):
    fake, engine = env
    n, a, b = new_namer(kafka), "loada", "loadb"
    a_msg = create_message(a, [step(a, [n.pipeline_inputs(a)], n.model_inputs("ma"))], n)
    deploy(fake, engine, a_msg)
    stop, sent = threading.Event(), []

    def load():
        producer = kafka.producer()
        i = 0
        while not stop.is_set():
            producer.produce(n.pipeline_inputs(a), value=req(I=[i]), key=f"0.loada.{i}",
                             headers=[("pipeline", b"loada")])
            sent.append(i)
            i += 1
            producer.poll(0)
            stop.wait(0.005)  # paces the load; ends at once on stop
        producer.flush(10)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        # b batches (it has state, so deleting it has a state directory to remove)
        b_msg = create_message(b, [step(b, [n.pipeline_inputs(b)], n.model_inputs("mb"), batch=(2, 1000))], n)
        deploy(fake, engine, b_msg)
        produced_while_b_up = len(sent)
        assert os.path.isdir(os.path.join(engine.state_dir, engine.name, b_msg.uid))
        assert not os.path.exists(os.path.join(engine.state_dir, engine.name, a_msg.uid))  # stateless: none
        fake.send(delete_message(b_msg, clean_topics=True, namer=n))
        assert fake.wait_ack(ack_for(b_msg.uid, Msg.Delete), 30).success
        # deleted version: state removed
        assert not os.path.exists(os.path.join(engine.state_dir, engine.name, b_msg.uid))
        remaining = AdminClient(kafka.settings.common()).list_topics(timeout=10).topics
        assert n.pipeline_inputs(b) not in remaining and n.pipeline_outputs(b) not in remaining
        assert n.model_inputs("mb") in remaining  # model topics are never deleted by the engine
        sent_by_delete = len(sent)
        wait_until(lambda: len(sent) >= sent_by_delete + 100, 30, "more load on a after b was deleted")
    finally:
        stop.set()
        loader.join()
    got = collect(kafka, n.model_inputs("ma"), len(sent), timeout_s=30)
    assert produced_while_b_up > 0
    assert sorted({int(m.key().decode().rsplit(".", 1)[1]) for m in got}) == sent
