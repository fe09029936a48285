"""Engine control loop against an in-process fake Chainer server, with fake runners (no Kafka):
ack contents, idempotent Create, conflated per-uid queues, parallelism across uids, Delete,
async state reports, reconnect and resend, ack retries."""
from __future__ import annotations

import asyncio
from typing import ClassVar

import grpc
import pytest

from chainer_api import chainer_pb2
from dataflow.engine import Engine, EngineConfig, chainer_client
from dataflow.runtime.base import PipelineRunner, RunnerError, RunnerState
from dataflow_testing.fake_chainer import FakeChainer, ack_for
from tests.waiting import wait_until_async

Msg = chainer_pb2.PipelineUpdateMessage


class FakeRunner(PipelineRunner):
    instances: ClassVar[list[FakeRunner]] = []
    held: ClassVar[dict[str, asyncio.Event]] = {}   # pipeline -> its starts finish once the test sets this
    fail_with: ClassVar[dict[str, str]] = {}

    def __init__(self, msg, config, on_state):
        super().__init__(msg, config, on_state)
        self.started = self.stopped = False
        FakeRunner.instances.append(self)

    async def start(self):
        if self.msg.pipeline in FakeRunner.held:
            await FakeRunner.held[self.msg.pipeline].wait()
        if self.msg.pipeline in FakeRunner.fail_with:
            raise RunnerError(FakeRunner.fail_with[self.msg.pipeline])
        self.started = True
        self._set_state(RunnerState.RUNNING)

    async def stop(self):
        self.stopped = True
        self._set_state(RunnerState.STOPPED)


@pytest.fixture
def fake():
    FakeRunner.instances, FakeRunner.held, FakeRunner.fail_with = [], {}, {}
    server = FakeChainer().start()
    yield server
    server.stop()


def create(name: str, uid: str, ts: int = 1, version: int = 1) -> Msg:
    return Msg(op=Msg.Create, pipeline=name, version=version, uid=uid, timestamp=ts)


def delete(name: str, uid: str, ts: int) -> Msg:
    return Msg(op=Msg.Delete, pipeline=name, version=1, uid=uid, timestamp=ts)


def run_with_engine(fake: FakeChainer, body, tmp_path):
    config = EngineConfig(replica_name="replica-1", scheduler=fake.target, state_dir=str(tmp_path))

    async def main():
        engine = Engine(config, runner_factory=FakeRunner)
        task = asyncio.create_task(engine.run())
        await asyncio.to_thread(fake.wait_subscribed, "replica-1", 10)
        try:
            return await body(engine)
        finally:
            engine.request_stop()
            await asyncio.wait_for(task, 10)

    return asyncio.run(main())


def wait_ack(fake, *args, timeout_s=10.0):
    return asyncio.to_thread(fake.wait_ack, ack_for(*args), timeout_s)


def test_create_ack_echoes_identity_timestamp_and_stream(fake, tmp_path):
    async def body(engine):
        fake.send(create("p1", "uid1", ts=42, version=3))
        return await wait_ack(fake, "uid1", Msg.Create)

    ack = run_with_engine(fake, body, tmp_path)
    assert (ack.update.pipeline, ack.update.version, ack.update.uid) == ("p1", 3, "uid1")
    assert ack.update.timestamp == 42 and ack.update.stream == "replica-1"
    assert ack.success and ack.reason == "pipeline data streams: ready"
    assert FakeRunner.instances[0].stopped  # engine shutdown stops pipelines


def test_repeated_create_is_idempotent_and_echoes_the_new_timestamp(fake, tmp_path):
    async def body(engine):
        fake.send(create("p1", "uid1", ts=1))
        await wait_ack(fake, "uid1", Msg.Create, 1)
        fake.send(create("p1", "uid1", ts=2))
        return await wait_ack(fake, "uid1", Msg.Create, 2)

    ack = run_with_engine(fake, body, tmp_path)
    assert ack.success
    assert len(FakeRunner.instances) == 1


def test_queue_per_uid_is_conflated_latest_wins(fake, tmp_path):
    start = FakeRunner.held["slow"] = asyncio.Event()

    async def body(engine):
        fake.send(create("slow", "u", ts=1))
        await wait_until_async(lambda: FakeRunner.instances, 10, "ts=1 starting")
        fake.send(delete("slow", "u", ts=2))   # the next three arrive while ts=1 is starting
        fake.send(create("slow", "u", ts=3))
        fake.send(delete("slow", "u", ts=4))
        fake.send(create("fast", "probe"))     # updates arrive in order: once this one is
        await wait_ack(fake, "probe", Msg.Create)  # answered, the three above are queued
        start.set()
        await wait_ack(fake, "u", Msg.Delete, 4)
        fake.send(create("slow", "u", ts=5))   # one queue per uid: an ack left over from ts=2 or
        await wait_ack(fake, "u", Msg.Create, 5)  # ts=3 would come before this one
        return [(a.update.op, a.update.timestamp) for a in fake.acks_for("u")]

    acks = run_with_engine(fake, body, tmp_path)
    assert acks == [(Msg.Create, 1), (Msg.Delete, 4), (Msg.Create, 5)]


def test_uids_are_handled_in_parallel(fake, tmp_path):
    start = FakeRunner.held["slow"] = asyncio.Event()

    async def body(engine):
        fake.send(create("slow", "a"))
        fake.send(create("fast", "b"))
        await wait_ack(fake, "b", Msg.Create)
        acks = fake.acks_for("a")
        start.set()
        return acks

    assert run_with_engine(fake, body, tmp_path) == []  # b answered while a was still starting


def test_start_failure_is_acked_with_the_runner_reason(fake, tmp_path):
    FakeRunner.fail_with["bad"] = "kafka streams topic creation error Exception: boom"

    async def body(engine):
        fake.send(create("bad", "u"))
        return await wait_ack(fake, "u", Msg.Create)

    ack = run_with_engine(fake, body, tmp_path)
    assert not ack.success and ack.reason == "kafka streams topic creation error Exception: boom"


def test_delete_stops_the_runner_and_unknown_uid_delete_is_acked(fake, tmp_path):
    async def body(engine):
        fake.send(create("p", "u1"))
        await wait_ack(fake, "u1", Msg.Create)
        fake.send(delete("p", "u1", ts=5))
        a1 = await wait_ack(fake, "u1", Msg.Delete, 5)
        fake.send(delete("q", "never-created", ts=9))
        a2 = await wait_ack(fake, "never-created", Msg.Delete, 9)
        return a1, a2, engine.manager.running

    a1, a2, running = run_with_engine(fake, body, tmp_path)
    assert a1.success and a1.reason == "pipeline removed"
    assert a2.success and a2.reason == "pipeline removed"
    assert FakeRunner.instances[0].stopped and running == {}


def test_runner_state_changes_become_rebalance_ready_and_error_acks(fake, tmp_path):
    async def body(engine):
        fake.send(create("p", "u", ts=7))
        await wait_ack(fake, "u", Msg.Create)
        runner = FakeRunner.instances[0]
        runner._set_state(RunnerState.REBALANCING)
        reb = await wait_ack(fake, "u", Msg.Rebalance)
        runner._set_state(RunnerState.RUNNING)
        ready = await wait_ack(fake, "u", Msg.Ready)
        runner._set_state(RunnerState.ERROR)
        await asyncio.to_thread(fake.wait_ack, lambda a: a.update.op == Msg.Ready and not a.success, 10)
        return reb, ready, fake.acks_for("u", Msg.Ready)

    reb, ready, readies = run_with_engine(fake, body, tmp_path)
    assert reb.success and reb.reason == "pipeline data streams: rebalancing" and reb.update.timestamp == 7
    assert ready.success and ready.reason == "pipeline data streams: ready"
    assert readies[-1].reason == "pipeline data streams error: kafka streams state: ERROR"


def test_engine_resubscribes_after_the_stream_ends_and_resent_creates_are_idempotent(fake, tmp_path):
    async def body(engine):
        fake.send(create("p", "u", ts=1))
        await wait_ack(fake, "u", Msg.Create)
        fake.disconnect("replica-1")
        await asyncio.to_thread(fake.wait_subscribed, "replica-1", 10, 2)
        await asyncio.to_thread(fake.wait_ack, lambda a: len(fake.acks_for("u", Msg.Create)) >= 2, 10)
        return fake.acks_for("u", Msg.Create)

    acks = run_with_engine(fake, body, tmp_path)
    assert all(a.success for a in acks)
    assert len(FakeRunner.instances) == 1


class FlakyAckServer(FakeChainer):
    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures

    def PipelineUpdateEvent(self, request, context):
        if self.failures > 0:
            self.failures -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return super().PipelineUpdateEvent(request, context)


@pytest.mark.parametrize("failures, delivered", [(3, True), (5, False)])
def test_ack_is_retried_up_to_five_attempts(monkeypatch, failures, delivered):
    monkeypatch.setattr(chainer_client, "ack_delay", lambda attempt: 0.01)
    server = FlakyAckServer(failures).start()
    try:
        async def main():
            client = chainer_client.ChainerClient(server.target, "r")
            try:
                return await client.ack(create("p", "u", ts=3), Msg.Create, True, "ok")
            finally:
                await client.close()
        assert asyncio.run(main()) is delivered
        assert len(server.acks) == (1 if delivered else 0)
    finally:
        server.stop()


def test_backoff_schedules():
    delays = chainer_client.reconnect_delays()
    assert [next(delays) for _ in range(9)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    for attempt in range(6):
        assert 0.1 <= chainer_client.ack_delay(attempt) <= 3.2


def test_keepalive_is_at_least_sixty_seconds_and_never_without_calls():
    opts = dict(chainer_client.KEEPALIVE_OPTIONS)
    assert opts["grpc.keepalive_time_ms"] >= 60_000
    assert opts["grpc.keepalive_permit_without_calls"] == 0


def test_engine_resubscribes_after_the_scheduler_restarts(fake, tmp_path):
    async def body(engine):
        fake.send(create("p", "u", ts=1))
        await wait_ack(fake, "u", Msg.Create)
        port = fake.port
        await asyncio.to_thread(fake.stop)
        restarted = FakeChainer().start(port=port)
        try:
            restarted.send(create("p", "u", ts=2))   # a restarted scheduler resends on subscribe
            await asyncio.to_thread(restarted.wait_subscribed, "replica-1", 15)
            return await asyncio.to_thread(restarted.wait_ack, ack_for("u", Msg.Create, 2), 10)
        finally:
            await asyncio.to_thread(restarted.stop)

    ack = run_with_engine(fake, body, tmp_path)
    assert ack.success and len(FakeRunner.instances) == 1  # still running: idempotent
