"""KafkaRunner state changelog over the embedded broker: a pending join survives losing the local
state directory, and follows a partition to another replica of the same version."""
from __future__ import annotations

import asyncio
import shutil

import pytest

from dataflow.runtime.base import RunnerError, RunnerState, RuntimeConfig
from dataflow.runtime.kafka_runtime import KafkaRunner
from tests.integration.engine.fakes import make_fake_pipeline
from tests.integration.engine.harness import collect, join_message, produce
from tests.waiting import wait_until_async


def config(kafka, state_dir, **kw) -> RuntimeConfig:
    return RuntimeConfig(kafka=kafka.settings, state_dir=str(state_dir), start_timeout_s=30,
                         commit_interval_ms=200, **kw)


def test_pending_join_is_restored_from_the_changelog_after_the_state_dir_is_lost(kafka, tmp_path):
    msg, a, b, sink = join_message(kafka, "cl")

    async def run_once(state_dir, topic, records):
        runner = KafkaRunner(msg, config(kafka, state_dir), pipeline_factory=make_fake_pipeline)
        await runner.start()
        await asyncio.to_thread(produce, kafka, topic, records, pipeline="cl")
        await wait_until_async(lambda: runner.stats["consumed"] >= len(records) and runner.stats["commits"] >= 1)
        await runner.stop()
        return runner

    first = asyncio.run(run_once(tmp_path / "one", a, [("0.k1", b"A1"), ("0.k2", b"A2")]))
    shutil.rmtree(first.state_dir)
    asyncio.run(run_once(tmp_path / "two", b, [("0.k1", b"B1"), ("0.k2", b"B2")]))
    got = collect(kafka, sink, 2)
    assert sorted(m.value() for m in got) == [b"A1+B1", b"A2+B2"]


def test_partition_moving_to_another_replica_brings_its_pending_join(kafka, tmp_path):
    msg, a, b, sink = join_message(kafka, "mv")

    async def main():
        first = KafkaRunner(msg, config(kafka, tmp_path / "a"), pipeline_factory=make_fake_pipeline)
        await first.start()
        await asyncio.to_thread(produce, kafka, a, [("0.k1", b"A1")], pipeline="mv")
        await wait_until_async(lambda: first.stats["consumed"] >= 1 and first.stats["commits"] >= 1)
        states = []
        second = KafkaRunner(msg, config(kafka, tmp_path / "b"), lambda s, r: states.append(s),
                             pipeline_factory=make_fake_pipeline)
        await second.start()  # one partition: it stays with one replica of the two
        seen = len(states)
        await first.stop()    # ... and ends up with the second one, which restores its state
        await wait_until_async(lambda: RunnerState.REBALANCING in states[seen:] and states[-1] == RunnerState.RUNNING)
        await asyncio.to_thread(produce, kafka, b, [("0.k1", b"B1")], pipeline="mv")
        got = await asyncio.to_thread(collect, kafka, sink, 1)
        stats = dict(second.stats)
        await second.stop()
        return got, stats

    got, stats = asyncio.run(main())
    assert [m.value() for m in got] == [b"A1+B1"]
    assert stats["consumed"] >= 1


def test_a_failed_restore_fails_start_with_a_clear_reason(kafka, tmp_path, monkeypatch):
    from dataflow.runtime import changelog

    msg, _a, _b, _sink = join_message(kafka, "rf")

    def broken(*args, **kw):
        raise changelog.RestoreError("changelog unreadable (test)")

    monkeypatch.setattr(changelog, "restore", broken)

    async def main():
        runner = KafkaRunner(msg, config(kafka, tmp_path), pipeline_factory=make_fake_pipeline)
        with pytest.raises(RunnerError) as info:
            await runner.start()
        await runner.stop()
        return str(info.value), runner.state

    reason, state = asyncio.run(main())
    assert reason == ("kafka streams: state restore from changelog failed Exception: "
                      "changelog unreadable (test)")
    assert state == RunnerState.ERROR


def test_changelog_with_another_partition_count_is_a_topic_creation_error(kafka, tmp_path):
    msg, _a, _b, _sink = join_message(kafka, "pc")
    runner = KafkaRunner(msg, config(kafka, tmp_path, partitions=2), pipeline_factory=make_fake_pipeline)
    kafka.create_topics(runner.changelog_topic, partitions=1)

    async def main():
        with pytest.raises(RunnerError) as info:
            await runner.start()
        return str(info.value)

    reason = asyncio.run(main())
    assert reason.startswith("kafka streams topic creation error Exception: ")
    assert runner.changelog_topic in reason
