"""FaustRunner state over the embedded broker: the same changelog topic and restore semantics as
KafkaRunner (tests/integration/engine/test_kafka_changelog.py). A pending join survives losing the
state directory, a pending batch follows its partition to another runner of the same version, a
stateless version has no changelog topic, and a failed restore fails the start with its reason."""
from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from dataflow import oip
from dataflow.runtime import changelog as cl
from dataflow.runtime.base import RunnerError, RunnerState, RuntimeConfig
from dataflow.runtime.faust_runtime import FaustRunner
from tests.integration.engine.harness import collect, create_message, join_message, new_namer, produce, step
from tests.waiting import wait_until_async

FAKE_JOIN = "tests.integration.engine.fakes:make_fake_pipeline"
BROKEN_RESTORE = "tests.integration.runtime.faust_factories:counting_with_broken_restore"

pytestmark = pytest.mark.timeout(120)


def config(kafka, state_dir, **kw) -> RuntimeConfig:
    return RuntimeConfig(kafka=kafka.settings, state_dir=str(state_dir), start_timeout_s=60,
                         commit_interval_ms=200, **kw)


def topics_of(kafka) -> set[str]:
    consumer = kafka.consumer()
    try:
        return set(consumer.list_topics(timeout=10).topics)
    finally:
        consumer.close()


async def changelog_holds(kafka, topic, n):
    """Wait until the changelog topic holds ``n`` records: the state is checkpointed."""
    got = await asyncio.to_thread(collect, kafka, topic, n, 30)
    assert len(got) >= n, f"{topic}: {len(got)} of {n} changelog records"
    return got


def test_pending_join_is_restored_from_the_changelog_after_the_state_dir_is_lost(kafka, tmp_path):
    msg, a, b, sink = join_message(kafka, "fcl")

    async def main():
        first = FaustRunner(msg, config(kafka, tmp_path / "one"), pipeline_factory=FAKE_JOIN)
        await first.start()
        assert first.changelog_topic == cl.changelog_topic(first.group_id)
        assert first.changelog_topic in topics_of(kafka)
        await asyncio.to_thread(produce, kafka, a, [("0.k1", b"A1"), ("0.k2", b"A2")], pipeline="fcl")
        await changelog_holds(kafka, first.changelog_topic, 2)  # both pending joins checkpointed
        await first.stop()
        shutil.rmtree(first.state_dir)  # only the changelog is left

        second = FaustRunner(msg, config(kafka, tmp_path / "two"), pipeline_factory=FAKE_JOIN)
        await second.start()
        await asyncio.to_thread(produce, kafka, b, [("0.k1", b"B1"), ("0.k2", b"B2")], pipeline="fcl")
        got = await asyncio.to_thread(collect, kafka, sink, 2)
        await second.stop()
        return got

    got = asyncio.run(main())
    assert sorted(m.value() for m in got) == [b"A1+B1", b"A2+B2"]


def batch_request(value: int) -> bytes:
    return oip.make_request({"X": np.asarray([[value, value]], dtype=np.int32)}).SerializeToString()


def test_pending_batch_follows_its_partition_to_another_runner(kafka, tmp_path):
    """A real compiled ``batch: {size: 2}`` step (default factory): one request pending on the first
    runner; the partition moves to a second runner when the first stops; the second request
    completes the batch there, restored from the changelog (the batcher caches its pending batches
    when built, so this also shows the processors are built after the restore)."""
    namer = new_namer(kafka)
    src, sink = namer.pipeline_inputs("fbt"), namer.model_inputs("m")
    msg = create_message("fbt", [step("fbt", [src], sink, batch=(2, None))], namer, with_error_step=False)

    async def main():
        first = FaustRunner(msg, config(kafka, tmp_path / "r1", partitions=1))
        await first.start()
        assert first.changelog_topic in topics_of(kafka)
        await asyncio.to_thread(produce, kafka, src, [("0.fbt.r1", batch_request(1))], pipeline="fbt")
        await changelog_holds(kafka, first.changelog_topic, 1)
        states = []
        second = FaustRunner(msg, config(kafka, tmp_path / "r2", partitions=1), lambda s, r: states.append(s))
        await second.start()  # one partition: it stays with one of the two runners
        seen = len(states)
        await first.stop()    # ... and ends up with the second one, which restores its state
        await wait_until_async(lambda: RunnerState.REBALANCING in states[seen:] and states[-1] == RunnerState.RUNNING)
        await asyncio.to_thread(produce, kafka, src, [("0.fbt.r2", batch_request(2))], pipeline="fbt")
        got = await asyncio.to_thread(collect, kafka, sink, 1, 30, settle_s=0.5)
        await second.stop()
        return got

    got = asyncio.run(main())
    assert len(got) == 1
    [batch] = got
    assert batch.key() == b"0.fbt.r2"  # the record that completed the batch
    arrays = oip.request_arrays(oip.parse_request(batch.value()))
    assert {k: v.tolist() for k, v in arrays.items()} == {"X": [[1, 1], [2, 2]]}


def test_stateless_pipeline_has_no_changelog_topic(kafka, tmp_path):
    namer = new_namer(kafka)
    src, sink = namer.pipeline_inputs("fsl"), namer.model_inputs("m")
    msg = create_message("fsl", [step("fsl", [src], sink)], namer, with_error_step=False)
    runner = FaustRunner(msg, config(kafka, tmp_path, partitions=1))  # default factory

    async def main():
        await runner.start()
        await asyncio.to_thread(produce, kafka, src, [("0.fsl.r", batch_request(1))], pipeline="fsl")
        got = await asyncio.to_thread(collect, kafka, sink, 1)
        await runner.stop()
        return got

    got = asyncio.run(main())
    assert len(got) == 1
    assert runner.changelog_topic is None
    assert cl.changelog_topic(runner.group_id) not in topics_of(kafka)
    assert not [t for t in topics_of(kafka) if t.startswith(runner.group_id)]


def test_a_failed_restore_fails_start_with_a_clear_reason(kafka, tmp_path):
    msg, _a, _b, _sink = join_message(kafka, "frf")
    runner = FaustRunner(msg, config(kafka, tmp_path, partitions=1), pipeline_factory=BROKEN_RESTORE)

    async def main():
        with pytest.raises(RunnerError) as info:
            await runner.start()
        await runner.stop()
        return str(info.value)

    reason = asyncio.run(main())
    assert reason == ("kafka streams: state restore from changelog failed Exception: "
                      "changelog unreadable (test)")
    assert runner.state in (RunnerState.ERROR, RunnerState.STOPPED)
