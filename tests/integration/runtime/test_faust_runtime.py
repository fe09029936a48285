"""FaustRunner against the embedded broker: one Faust worker process per pipeline version.

Each runner start costs a process start plus a group join (a few seconds), so the tests share
runners where they can.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from chainer_api import chainer_pb2
from dataflow.kafka import dataflow_group_id
from dataflow.runtime.base import RunnerError, RunnerState, RuntimeConfig
from dataflow.runtime.faust_runtime import FaustRunner
from tests.waiting import wait_until, wait_until_async

PASSTHROUGH = "dataflow_testing.faust_factories:passthrough"
COUNTING = "dataflow_testing.faust_factories:counting"


def pipeline_msg(uid: str, source: str, sink: str, name: str = "p", version: int = 1):
    msg = chainer_pb2.PipelineUpdateMessage(op=chainer_pb2.PipelineUpdateMessage.Create,
                                            pipeline=name, version=version, uid=uid)
    update = msg.updates.add()
    update.sources.add(pipelineName=name, topicName=source)
    update.sink.pipelineName = name
    update.sink.topicName = sink
    return msg


def config_for(kafka, tmp_path, partitions=3, **kw) -> RuntimeConfig:
    return RuntimeConfig(kafka=kafka.settings, partitions=partitions, state_dir=str(tmp_path / "state"),
                         start_timeout_s=60, **kw)


def consume(kafka, topic, n, timeout_s=30.0, *, read_committed=False):
    """The first ``n`` records of ``topic`` (all partitions, from the beginning; no group join);
    with ``read_committed`` only records of committed transactions."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    extra = {"isolation.level": "read_committed"} if read_committed else {}
    consumer = kafka.consumer(**extra)
    partitions = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, deadline = [], time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        consumer.close()
    return out


class Recorder:
    def __init__(self):
        self.states: list[tuple[RunnerState, str]] = []

    def __call__(self, state, reason):
        self.states.append((state, reason))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def wait_dead(pid: int, timeout_s: float = 20.0) -> None:
    wait_until(lambda: not pid_alive(pid), timeout_s, f"process {pid} to end")


@pytest.mark.parametrize("path", ["batch", "agent"])
def test_passthrough_keeps_key_headers_timestamp_and_partition_rule(kafka, tmp_path, path):
    source, sink = kafka.unique("fa-src"), kafka.unique("fa-sink")
    recorder = Recorder()
    runner = FaustRunner(pipeline_msg(kafka.unique("uid"), source, sink), config_for(kafka, tmp_path),
                         recorder, pipeline_factory=PASSTHROUGH, processing_path=path)

    async def run():
        await runner.start()
        assert runner.state == RunnerState.RUNNING
        assert runner.partitions == {source: 3, sink: 3}  # created by start()
        producer = kafka.producer()
        keys = ["0.p.a", "1.p.b", "2.p.c", "7.p.clamped", "x.p.nonint"]
        # Read from partition 0 but keyed for elsewhere: the sink partition follows the key.
        for i, key in enumerate(keys):
            producer.produce(source, key=key, value=f"v{i}".encode(), partition=0,
                             headers=[("pipeline", b"p"), ("x-request-id", key.encode()),
                                      ("x-pipeline-version", b"9")],
                             timestamp=1_700_000_000_000 + i)
        producer.produce(source, key="1.p.poison", value=b"poison", partition=1, headers=[("pipeline", b"p")])
        producer.produce(source, key="1.p.after", value=b"after", partition=1, headers=[("pipeline", b"p")])
        producer.flush(10)
        big = kafka.producer(**{"message.max.bytes": 10_000_000})  # larger than a fetch and a batch
        big.produce(source, key="2.p.big", value=b"b" * 5_000_000, partition=2, headers=[("pipeline", b"p")])
        big.flush(10)
        got = await asyncio.to_thread(consume, kafka, sink, len(keys) + 2)
        pid = runner.pid
        await runner.stop()
        return got, pid

    got, pid = asyncio.run(run())
    by_key = {m.key().decode(): m for m in got}
    assert set(by_key) == {"0.p.a", "1.p.b", "2.p.c", "7.p.clamped", "x.p.nonint", "1.p.after",
                           "2.p.big"}  # poison skipped
    assert len(by_key["2.p.big"].value()) == 5_000_000
    expected_partition = {"0.p.a": 0, "1.p.b": 1, "2.p.c": 2, "7.p.clamped": 2, "x.p.nonint": 0, "1.p.after": 1,
                          "2.p.big": 2}
    for key, m in by_key.items():
        assert m.partition() == expected_partition[key], key
    for i, key in enumerate(["0.p.a", "1.p.b", "2.p.c", "7.p.clamped", "x.p.nonint"]):
        m = by_key[key]
        assert m.value() == f"v{i}".encode()
        assert m.timestamp()[1] == 1_700_000_000_000 + i
        assert m.headers() == [("x-request-id", key.encode()), ("pipeline", b"p"), ("x-pipeline-version", b"1")]
    # stop() ended the worker and reported STOPPING -> STOPPED
    wait_dead(pid, 5)
    assert [s for s, _ in recorder.states] == [RunnerState.RUNNING, RunnerState.STOPPING, RunnerState.STOPPED]


def test_two_versions_side_by_side_and_stopping_one_does_not_stall_the_other(kafka, tmp_path):
    a_src, a_sink = kafka.unique("fa-a-src"), kafka.unique("fa-a-sink")
    b_src, b_sink = kafka.unique("fa-b-src"), kafka.unique("fa-b-sink")
    config = config_for(kafka, tmp_path, partitions=1)
    uid_a, uid_b = kafka.unique("uid-a"), kafka.unique("uid-b")
    runner_a = FaustRunner(pipeline_msg(uid_a, a_src, a_sink), config, pipeline_factory=PASSTHROUGH)
    runner_b = FaustRunner(pipeline_msg(uid_b, b_src, b_sink), config, pipeline_factory=PASSTHROUGH)
    assert runner_a.group_id == dataflow_group_id(uid_a) != runner_b.group_id

    async def run():
        await asyncio.gather(runner_a.start(), runner_b.start())
        assert runner_a.pid != runner_b.pid
        producer = kafka.producer()
        producer.produce(a_src, key="0.p.a1", value=b"a1")
        producer.produce(b_src, key="0.p.b1", value=b"b1")
        producer.flush(10)
        got_a, got_b = await asyncio.gather(asyncio.to_thread(consume, kafka, a_sink, 1),
                                            asyncio.to_thread(consume, kafka, b_sink, 1))
        stop_a = asyncio.create_task(runner_a.stop())
        producer.produce(b_src, key="0.p.b2", value=b"b2")
        producer.flush(10)
        got_b2 = await asyncio.to_thread(consume, kafka, b_sink, 2)
        await stop_a
        assert runner_b.state == RunnerState.RUNNING
        await runner_b.stop()
        return got_a, got_b, got_b2

    got_a, got_b, got_b2 = asyncio.run(run())
    assert [m.value() for m in got_a] == [b"a1"]
    assert [m.value() for m in got_b] == [b"b1"]
    assert [m.value() for m in got_b2] == [b"b1", b"b2"]


COUNT_KEY = b"counts:per-key\x00count/"  # changelog key of CountingPipeline's count of a record key


def wait_changelog(kafka, topic, predicate, timeout_s=30.0):
    """Read the changelog from the beginning until ``predicate(records)`` holds; the records."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = consume(kafka, topic, 1_000_000, 0.5)
        if predicate(got):
            return got
    raise AssertionError(f"{topic}: condition not reached")


def test_state_restored_from_changelog_after_local_state_is_lost(kafka, tmp_path):
    source, sink = kafka.unique("fa-cnt-src"), kafka.unique("fa-cnt-sink")
    uid = kafka.unique("uid-cnt")
    config = config_for(kafka, tmp_path, partitions=2)

    async def round_trip(values, total):
        runner = FaustRunner(pipeline_msg(uid, source, sink), config, pipeline_factory=COUNTING)
        await runner.start()
        producer = kafka.producer()
        for key, value in values:
            producer.produce(source, key=key, value=value, partition=int(key[0]))
        producer.flush(10)
        return runner, await asyncio.to_thread(consume, kafka, sink, total)

    async def run():
        first, got = await round_trip([("1.p.k", b"x"), ("1.p.k", b"x"), ("0.p.j", b"x")], 3)
        await first.stop()
        shutil.rmtree(tmp_path / "state")  # local RocksDB gone: only the changelog is left
        second, got2 = await round_trip([("1.p.k", b"x"), ("0.p.j", b"forget")], 5)
        # punctuate (no current record) deletes j's count; once that is checkpointed (a tombstone
        # in the changelog), the next j starts from 1 again
        await asyncio.to_thread(wait_changelog, kafka, second.changelog_topic,
                                lambda got: any(m.key() == COUNT_KEY + b"0.p.j" and m.value() is None
                                                for m in got))
        producer = kafka.producer()
        producer.produce(source, key="0.p.j", value=b"x", partition=0)
        producer.flush(10)
        got3 = await asyncio.to_thread(consume, kafka, sink, 6)
        await second.stop()
        return got, got2, got3

    got, got2, got3 = asyncio.run(run())

    def pairs(msgs):
        return sorted((m.key(), m.value()) for m in msgs)

    assert pairs(got) == [(b"0.p.j", b"1"), (b"1.p.k", b"1"), (b"1.p.k", b"2")]
    assert pairs(got2) == sorted(pairs(got) + [(b"0.p.j", b"2"), (b"1.p.k", b"3")])
    assert pairs(got3) == sorted(pairs(got2) + [(b"0.p.j", b"1")])


def test_bad_topic_layout_fails_start_with_a_reason(kafka, tmp_path):
    source = kafka.new_topic("fa-odd-src", partitions=2)
    sink = kafka.new_topic("fa-odd-sink", partitions=1)
    runner = FaustRunner(pipeline_msg(kafka.unique("uid"), source, sink), config_for(kafka, tmp_path),
                         pipeline_factory=PASSTHROUGH)
    with pytest.raises(RunnerError, match=r"topic creation error.*equal partition counts"):
        asyncio.run(runner.start())
    assert runner.pid is None


def test_bad_factory_fails_start_with_a_reason(kafka, tmp_path):
    runner = FaustRunner(pipeline_msg(kafka.unique("uid"), "a", "b"), config_for(kafka, tmp_path),
                         pipeline_factory="dataflow_testing.faust_factories:no_such_factory")
    with pytest.raises(RunnerError, match="failed to initialize"):
        asyncio.run(runner.start())


def consume_committed(kafka, topic, n, timeout_s=30.0):
    return consume(kafka, topic, n, timeout_s, read_committed=True)


def wait_changelog_committed(kafka, topic, key, value, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any((m.key(), m.value()) == (key, value)
               for m in consume(kafka, topic, 1_000_000, 0.5, read_committed=True)):
            return
    raise AssertionError(f"{topic}: {key!r} = {value!r} not committed")


@pytest.mark.parametrize("restart", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_exactly_once_with_state(kafka, tmp_path, restart):
    """exactly_once: outputs and changelog records in Kafka transactions (aiokafka's InitProducerId
    upgraded to v3 so the embedded broker accepts it); a restarted version resumes its counts.
    Crash consistency needs a real Kafka (the embedded broker shows aborted records)."""
    source, sink = kafka.unique("fa-eos-src"), kafka.unique("fa-eos-sink")
    uid = kafka.unique("uid-eos")
    config = config_for(kafka, tmp_path, partitions=1, exactly_once=True)

    async def run():
        first = FaustRunner(pipeline_msg(uid, source, sink), config, pipeline_factory=COUNTING)
        await first.start()
        producer = kafka.producer()
        for key in ("0.p.k", "0.p.k", "0.p.j"):
            producer.produce(source, key=key, value=b"x")
        producer.flush(10)
        got = await asyncio.to_thread(consume_committed, kafka, sink, 3)
        # the counts reach the changelog in committed transactions
        await asyncio.to_thread(wait_changelog_committed, kafka, first.changelog_topic, COUNT_KEY + b"0.p.k", b"2")
        await first.stop()
        if not restart:
            return got, None
        second = FaustRunner(pipeline_msg(uid, source, sink), config, pipeline_factory=COUNTING)
        await second.start()
        producer.produce(source, key="0.p.k", value=b"x")
        producer.flush(10)
        got2 = await asyncio.to_thread(consume_committed, kafka, sink, 4)
        await second.stop()
        return got, got2

    got, got2 = asyncio.run(run())
    assert [(m.key(), m.value()) for m in got] == [(b"0.p.k", b"1"), (b"0.p.k", b"2"), (b"0.p.j", b"1")]
    if not restart:
        return
    assert (got2[-1].key(), got2[-1].value()) == (b"0.p.k", b"3")
    assert len(got2) == 4  # nothing replayed after a clean stop


@pytest.mark.real_kafka
def test_exactly_once_survives_sigkill_without_duplicates(kafka, tmp_path):
    """On a real Kafka: kill the worker mid-stream, restart; a read_committed reader sees every
    count exactly once."""
    assert kafka.broker is None, ("needs a real Apache Kafka (set DATAFLOW_TEST_KAFKA): the embedded "
                                  "broker keeps aborted records visible to read_committed readers "
                                  "(docs/embedded-broker.md)")
    source, sink = kafka.unique("fa-eos-kill-src"), kafka.unique("fa-eos-kill-sink")
    uid = kafka.unique("uid-eos-kill")
    config = config_for(kafka, tmp_path, partitions=1, exactly_once=True)

    async def run():
        first = FaustRunner(pipeline_msg(uid, source, sink), config, pipeline_factory=COUNTING)
        await first.start()
        producer = kafka.producer()
        for _ in range(200):
            producer.produce(source, key="0.p.k", value=b"x")
        producer.flush(10)
        await asyncio.to_thread(consume_committed, kafka, sink, 50)
        os.kill(first.pid, signal.SIGKILL)
        await first.stop()
        second = FaustRunner(pipeline_msg(uid, source, sink), config, pipeline_factory=COUNTING)
        await second.start()
        got = await asyncio.to_thread(consume_committed, kafka, sink, 200, 120)
        await second.stop()
        return got

    got = asyncio.run(run())
    assert [int(m.value()) for m in got] == list(range(1, 201))


_ENGINE_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from chainer_api import chainer_pb2
    from dataflow.kafka import KafkaSettings
    from dataflow.runtime.base import RuntimeConfig
    from dataflow.runtime.faust_runtime import FaustRunner

    async def main():
        bootstrap, src, sink, uid, state_dir = sys.argv[1:6]
        msg = chainer_pb2.PipelineUpdateMessage(op=1, pipeline="p", version=1, uid=uid)
        u = msg.updates.add()
        u.sources.add(pipelineName="p", topicName=src)
        u.sink.pipelineName = "p"
        u.sink.topicName = sink
        config = RuntimeConfig(kafka=KafkaSettings(bootstrap_servers=bootstrap), state_dir=state_dir)
        runner = FaustRunner(msg, config, pipeline_factory="dataflow_testing.faust_factories:passthrough")
        await runner.start()
        print(runner.pid, flush=True)
        await asyncio.Event().wait()  # runs until the test kills it

    asyncio.run(main())
""")


def test_worker_dies_when_the_engine_is_killed(kafka, tmp_path):
    engine = subprocess.Popen(
        [sys.executable, "-c", _ENGINE_SCRIPT, kafka.bootstrap, kafka.unique("fa-orph-src"),
         kafka.unique("fa-orph-sink"), kafka.unique("uid"), str(tmp_path / "state")],
        stdout=subprocess.PIPE, text=True)
    try:
        line = engine.stdout.readline()
        worker_pid = int(line)
        assert pid_alive(worker_pid)
    finally:
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
    wait_dead(worker_pid, 15)


@pytest.mark.slow
def test_state_survives_sigkill_of_the_worker(kafka, tmp_path):
    """A worker killed mid-run: the runner reports ERROR; a new runner with the same uid and state
    dir resumes with the stored counts (at-least-once: replayed records may count twice)."""
    source, sink = kafka.unique("fa-kill-src"), kafka.unique("fa-kill-sink")
    uid = kafka.unique("uid-kill")
    config = config_for(kafka, tmp_path, partitions=1)

    async def run():
        recorder = Recorder()
        first = FaustRunner(pipeline_msg(uid, source, sink), config, recorder, pipeline_factory=COUNTING)
        await first.start()
        producer = kafka.producer()
        for _ in range(3):
            producer.produce(source, key="0.p.k", value=b"x")
        producer.flush(10)
        got = await asyncio.to_thread(consume, kafka, sink, 3)
        await asyncio.to_thread(wait_changelog, kafka, first.changelog_topic,  # checkpointed
                                lambda got: any(m.value() == b"3" for m in got))
        os.kill(first.pid, signal.SIGKILL)
        await wait_until_async(lambda: recorder.states[-1][0] == RunnerState.ERROR, 10,
                               "the runner to report ERROR")
        await first.stop()
        second = FaustRunner(pipeline_msg(uid, source, sink), config, pipeline_factory=COUNTING)
        await second.start()
        producer.produce(source, key="0.p.k", value=b"x")
        producer.flush(10)
        got2 = await asyncio.to_thread(consume, kafka, sink, 4, 60)
        await second.stop()
        return recorder, got, got2

    recorder, got, got2 = asyncio.run(run())
    assert [m.value() for m in got] == [b"1", b"2", b"3"]
    assert (RunnerState.ERROR in [s for s, _ in recorder.states])
    assert int(got2[-1].value()) >= 4


class ModelLoop:
    """Plays the model servers of a pipeline: reads ``model.<m>.inputs`` and answers on
    ``model.<m>.outputs`` with ``fn(request)`` on the same partition, keeping key and headers."""

    def __init__(self, kafka, namer, models):
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self.namer, self.models = namer, models
        self.consumer = kafka.consumer()
        self.consumer.assign([TopicPartition(namer.model_inputs(m), 0, OFFSET_BEGINNING) for m in models])
        self.producer = kafka.producer()

    def serve(self, n, timeout_s=30.0):
        from dataflow import oip

        served, deadline = [], time.monotonic() + timeout_s
        while len(served) < n and time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            model = msg.topic().split(".")[-2]
            response = self.models[model](oip.parse_request(msg.value()))
            self.producer.produce(self.namer.model_outputs(model), key=msg.key(), value=response.SerializeToString(),
                                  partition=msg.partition(), headers=msg.headers())
            self.producer.flush(10)
            served.append(model)
        return served

    def close(self):
        self.consumer.close()


def test_compiled_chain_and_join_pipeline(kafka, tmp_path):
    """A real compiled pipeline: m1 -> m2 (tensor renames), m3 joins m1 and m2 (state in partition
    tasks with a changelog topic), output from m3."""
    import numpy as np

    from dataflow import oip
    from dataflow.kafka import TopicNamer
    from scheduler_min.convert import pipeline_message

    namer = TopicNamer(prefix=kafka.unique("fseldon"), namespace="default")
    msg = pipeline_message({
        "name": "chain",
        "steps": [{"name": "m1"},
                  {"name": "m2", "inputs": ["m1"],
                   "tensorMap": {"m1.outputs.OUTPUT0": "INPUT0", "m1.outputs.OUTPUT1": "INPUT1"}},
                  {"name": "m3", "inputs": ["m1.outputs.OUTPUT0", "m2.outputs.OUTPUT1"]}],
        "output": {"steps": ["m3"]}}, version=3, uid=kafka.unique("uid-chain"), namer=namer)

    def add_sub(req):
        a = oip.request_arrays(req)
        x, y = a.get("INPUT0"), a.get("INPUT1")
        if x is None or y is None:
            x, y = list(a.values())
        return oip.make_response({"OUTPUT0": x + y, "OUTPUT1": x - y}, raw=True, id=req.id)

    runner = FaustRunner(msg, config_for(kafka, tmp_path, partitions=1))  # default factory: compile_pipeline
    x = np.arange(4, dtype=np.int32).reshape(1, 4)
    y = np.full((1, 4), 10, dtype=np.int32)

    async def run():
        await runner.start()
        loop = await asyncio.to_thread(ModelLoop, kafka, namer, {"m1": add_sub, "m2": add_sub, "m3": add_sub})
        try:
            producer = kafka.producer()
            request = oip.make_request({"INPUT0": x, "INPUT1": y}, id="r1")
            producer.produce(namer.pipeline_inputs("chain"), key="0.chain.r1", value=request.SerializeToString(),
                             headers=[("pipeline", b"chain"), ("x-request-id", b"r1")])
            producer.flush(10)
            served = await asyncio.to_thread(loop.serve, 3)
            got = await asyncio.to_thread(consume, kafka, namer.pipeline_outputs("chain"), 1)
        finally:
            loop.close()
            await runner.stop()
        return served, got

    served, got = asyncio.run(run())
    assert served == ["m1", "m2", "m3"]
    changelogs = [t for t in kafka.consumer().list_topics(timeout=10).topics if t.startswith(runner.group_id)]
    assert changelogs == [f"{runner.group_id}-state-changelog"], "the join's state has one changelog topic"
    [out] = got
    assert out.key() == b"0.chain.r1"
    assert out.headers() == [("x-request-id", b"r1"), ("pipeline", b"chain"), ("x-pipeline-version", b"3")]
    # m1: (x+y, x-y); m2: (2x, 2y); m3 joins m1.OUTPUT0 = x+y and m2.OUTPUT1 = 2y
    arrays = oip.response_arrays(oip.parse_response(out.value()))
    np.testing.assert_array_equal(arrays["OUTPUT0"], x + 3 * y)
    np.testing.assert_array_equal(arrays["OUTPUT1"], x - y)


def test_replicas_of_one_version_share_the_group_and_split_partitions(kafka, tmp_path):
    """Two runners of the same uid (two engine replicas): one consumer group, partitions split,
    the first reports REBALANCING -> RUNNING when the second joins, every record handled once."""
    source, sink = kafka.unique("fa-rep-src"), kafka.unique("fa-rep-sink")
    uid = kafka.unique("uid-rep")
    first_states = Recorder()
    first = FaustRunner(pipeline_msg(uid, source, sink), config_for(kafka, tmp_path / "r1", partitions=2),
                        first_states, pipeline_factory=PASSTHROUGH)
    second = FaustRunner(pipeline_msg(uid, source, sink), config_for(kafka, tmp_path / "r2", partitions=2),
                         pipeline_factory=PASSTHROUGH)

    async def run():
        await first.start()
        await second.start()
        await wait_until_async(lambda: first_states.states[-1][0] == RunnerState.RUNNING
                               and len(first_states.states) >= 3, 20,
                               "the first replica to settle after the second joined")
        producer = kafka.producer()
        for i in range(10):
            producer.produce(source, key=f"{i % 2}.p.r{i}", value=f"v{i}".encode(), partition=i % 2)
        producer.flush(10)
        await asyncio.to_thread(consume, kafka, sink, 10)
        got = await asyncio.to_thread(consume, kafka, sink, 11, 1.0)  # a duplicate would show up here
        await asyncio.gather(first.stop(), second.stop())
        return got

    got = asyncio.run(run())
    assert sorted(m.value() for m in got) == sorted(f"v{i}".encode() for i in range(10))
    states = [s for s, _ in first_states.states]
    assert states[:3] == [RunnerState.RUNNING, RunnerState.REBALANCING, RunnerState.RUNNING]
