"""KafkaRunner over the real (embedded) broker with a fake pipeline: routing, headers, state,
failure reasons, resume after restart."""
from __future__ import annotations

import asyncio

import pytest

from dataflow.kafka import partition_for_key
from dataflow.runtime.base import RunnerError, RunnerState, RuntimeConfig
from dataflow.runtime.kafka_runtime import KafkaRunner
from tests.integration.engine.fakes import make_fake_pipeline
from tests.integration.engine.harness import (
    collect,
    committed_offset,
    create_message,
    header,
    new_namer,
    produce,
    step,
)
from tests.waiting import wait_until, wait_until_async


def config(kafka, tmp_path, **kw) -> RuntimeConfig:
    return RuntimeConfig(kafka=kafka.settings, state_dir=str(tmp_path), start_timeout_s=30,
                         commit_interval_ms=200, **kw)


def chain_message(kafka, name="chain", partitions=1):
    namer = new_namer(kafka)
    src, sink = namer.pipeline_inputs(name), namer.model_inputs("m1")
    return namer, create_message(name, [step(name, [src], sink)], namer, with_error_step=False), src, sink


def test_passthrough_keeps_key_partition_timestamp_and_rewrites_headers(kafka, tmp_path):
    _namer, msg, src, sink = chain_message(kafka)
    states = []

    async def main():
        runner = KafkaRunner(msg, config(kafka, tmp_path, partitions=3), lambda s, r: states.append(s),
                             pipeline_factory=make_fake_pipeline, memory_state=True)
        await runner.start()
        assert runner.state == RunnerState.RUNNING
        records = [(f"{i % 3}.chain.req{i}", f"v{i}".encode()) for i in range(30)]
        await asyncio.to_thread(produce, kafka, src, records, pipeline="chain",
                                headers=[("x-request-id", b"r"), ("x-seldon-alibi-type", b"drop")])
        got = await asyncio.to_thread(collect, kafka, sink, 30)
        await runner.stop()
        return got

    got = asyncio.run(main())
    assert len(got) == 30
    for m in got:
        key = m.key().decode()
        assert m.partition() == partition_for_key(key, 3)
        assert m.value() == f"v{key.rsplit('req', 1)[1]}".encode()
        assert header(m, "pipeline") == b"chain"
        assert header(m, "x-pipeline-version") == b"1"
        assert header(m, "x-request-id") == b"r"
        assert header(m, "x-seldon-alibi-type") is None
    assert states[0] == RunnerState.RUNNING and states[-1] == RunnerState.STOPPED


def test_bad_record_is_skipped_and_the_loop_keeps_going(kafka, tmp_path):
    _namer, msg, src, sink = chain_message(kafka)

    async def main():
        runner = KafkaRunner(msg, config(kafka, tmp_path), pipeline_factory=make_fake_pipeline,
                             memory_state=True)
        await runner.start()
        await asyncio.to_thread(produce, kafka, src, [("0.a", b"boom"), ("0.b", b"ok")], pipeline="chain")
        got = await asyncio.to_thread(collect, kafka, sink, 1)
        stats = dict(runner.stats)
        await runner.stop()
        return got, stats

    got, stats = asyncio.run(main())
    assert [m.key() for m in got] == [b"0.b"]
    assert stats["failed"] == 1


def test_compile_failure_reason(kafka, tmp_path):
    namer = new_namer(kafka)
    msg = create_message("bad", [step("bad", [("fail-compile", namer.pipeline_inputs("x"), None)],
                                      namer.model_inputs("m"))], namer)

    async def main():
        runner = KafkaRunner(msg, config(kafka, tmp_path), pipeline_factory=make_fake_pipeline,
                             memory_state=True)
        with pytest.raises(RunnerError) as info:
            await runner.start()
        return str(info.value)

    reason = asyncio.run(main())
    assert reason == "failed to initialize kafka streams for pipeline Exception: fake compile failure requested"


def test_unequal_partitions_is_a_topic_creation_error(kafka, tmp_path):
    _namer, msg, src, sink = chain_message(kafka)
    kafka.create_topics(src, partitions=2)
    kafka.create_topics(sink, partitions=1)

    async def main():
        runner = KafkaRunner(msg, config(kafka, tmp_path), pipeline_factory=make_fake_pipeline,
                             memory_state=True)
        with pytest.raises(RunnerError) as info:
            await runner.start()
        return str(info.value)

    reason = asyncio.run(main())
    assert reason.startswith("kafka streams topic creation error Exception: ")
    assert "equal partition counts" in reason


def test_exactly_once_happy_path(kafka, tmp_path):
    _namer, msg, src, sink = chain_message(kafka, name="eos")

    async def main():
        runner = KafkaRunner(msg, config(kafka, tmp_path, exactly_once=True),
                             pipeline_factory=make_fake_pipeline, memory_state=True)
        await runner.start()
        await asyncio.to_thread(produce, kafka, src, [(f"0.k{i}", b"v") for i in range(20)], pipeline="eos")
        got = await asyncio.to_thread(collect, kafka, sink, 20)
        await runner.stop()
        return got, runner.stats

    got, stats = asyncio.run(main())
    assert len(got) == 20
    assert stats["commits"] >= 1


def test_pending_join_survives_a_restart_with_the_same_state_dir(kafka, tmp_path):
    namer = new_namer(kafka)
    a, b, sink = namer.model_outputs("a"), namer.model_outputs("b"), namer.model_inputs("c")
    msg = create_message("j", [step("j", [a, b], sink)], namer, with_error_step=False)

    async def run_once(records_topic, records):
        runner = KafkaRunner(msg, config(kafka, tmp_path), pipeline_factory=make_fake_pipeline)
        await runner.start()
        await asyncio.to_thread(produce, kafka, records_topic, records, pipeline="j")
        # a commit comes after the state it covers is written
        await asyncio.to_thread(wait_until, lambda: committed_offset(kafka, runner.group_id, records_topic)
                                >= len(records), 30, "the records' offsets committed", interval=0.1)
        await runner.stop()

    asyncio.run(run_once(a, [("0.k1", b"A1"), ("0.k2", b"A2")]))
    asyncio.run(run_once(b, [("0.k1", b"B1"), ("0.k2", b"B2")]))
    got = collect(kafka, sink, 2)
    assert sorted(m.value() for m in got) == [b"A1+B1", b"A2+B2"]


def test_second_replica_splits_partitions_and_first_reports_rebalancing(kafka, tmp_path):
    _namer, msg, src, sink = chain_message(kafka, name="split")
    states = []

    async def main():
        cfg = config(kafka, tmp_path, partitions=2)
        first = KafkaRunner(msg, cfg, lambda s, r: states.append(s), pipeline_factory=make_fake_pipeline,
                            memory_state=True)
        await first.start()
        second = KafkaRunner(msg, cfg, pipeline_factory=make_fake_pipeline, memory_state=True)
        await second.start()
        await wait_until_async(lambda: states[-1] == RunnerState.RUNNING and RunnerState.REBALANCING in states,
                               10, "the first replica back from its rebalance")
        records = [(f"{i % 2}.split.r{i}", b"v") for i in range(20)]
        await asyncio.to_thread(produce, kafka, src, records, pipeline="split")
        got = await asyncio.to_thread(collect, kafka, sink, 20)
        s1, s2 = dict(first.stats), dict(second.stats)
        await asyncio.gather(first.stop(), second.stop())
        return got, s1, s2

    got, s1, s2 = asyncio.run(main())
    assert states[:3] == [RunnerState.RUNNING, RunnerState.REBALANCING, RunnerState.RUNNING]
    assert len({m.key() for m in got}) == 20
    assert s1["consumed"] > 0 and s2["consumed"] > 0  # both replicas got a partition


def test_a_partition_first_used_after_its_owner_left_is_read_from_where_the_version_started(kafka, tmp_path):
    """"Start at latest" is the rule for a new version, not for every later owner: the start
    position of every assigned partition is committed at once, so records produced while no
    replica owned the partition are processed by the next owner instead of skipped."""
    _namer, msg, src, sink = chain_message(kafka, name="later")
    cfg = config(kafka, tmp_path, partitions=2)

    async def main():
        first = KafkaRunner(msg, cfg, pipeline_factory=make_fake_pipeline, memory_state=True)
        await first.start()          # owns both partitions, processes nothing
        await first.stop()           # gone before any record arrived
        records = [(f"{i % 2}.later.r{i}", b"v") for i in range(10)]
        await asyncio.to_thread(produce, kafka, src, records, pipeline="later")
        second = KafkaRunner(msg, cfg, pipeline_factory=make_fake_pipeline, memory_state=True)
        await second.start()
        got = await asyncio.to_thread(collect, kafka, sink, 10)
        await second.stop()
        return records, got

    records, got = asyncio.run(main())
    assert sorted(m.key().decode() for m in got) == sorted(k for k, _ in records)
