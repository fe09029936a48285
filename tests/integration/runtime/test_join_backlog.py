"""A join catching up on a backlog whose record times span more than its window, on both runtimes.

Both branches hold 300 keys one second apart (the default 60 s window) before the runner starts.
The Kafka runner's consumer hands the branches over in runs of one topic; processed in that
order, the first run pushes the join's stream time to the end of the backlog and the other branch
then finds only the last minute of partners (61 of 300 joined). Taken in record-time order across
the branches, as Kafka Streams takes them, every key joins. (Faust's consumer deals the records
of a fetch out round-robin across partitions, which hides the defect at this size; it aligns the
same way, and must join every key too.)
"""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from dataflow import oip
from dataflow.kafka import TopicNamer, dataflow_group_id
from dataflow.runtime.base import RuntimeConfig
from dataflow.state import MemoryStore
from dataflow.topology import compile_pipeline
from scheduler_min.convert import pipeline_message
from tests.integration.engine.harness import collect

KEYS = 300


def runner_for(kind: str, msg, config):
    if kind == "kafka":
        from dataflow.runtime.kafka_runtime import KafkaRunner
        return KafkaRunner(msg, config)
    from dataflow.runtime.faust_runtime import FaustRunner
    return FaustRunner(msg, config)


@pytest.mark.parametrize("kind", ["kafka", "faust"])
def test_a_backlog_longer_than_the_join_window_joins_every_key(kafka, tmp_path, kind):
    namer = TopicNamer(prefix=kafka.unique("backlog"), namespace="default")
    uid = kafka.unique("uid-backlog")
    msg = pipeline_message({"name": "bl", "steps": [{"name": "a"}, {"name": "b"}, {"name": "j", "inputs": ["a", "b"]}]},
                           uid=uid, namer=namer)
    a, b, sink = namer.model_outputs("a"), namer.model_outputs("b"), namer.model_inputs("j")
    kafka.create_topics(*sorted(compile_pipeline(msg, store_factory=MemoryStore).all_topics), partitions=1)
    value = oip.make_response({"OUTPUT0": np.zeros((1, 4), dtype=np.float32)}, raw=True, id="r").SerializeToString()
    producer = kafka.producer()
    start_ms = int(time.time() * 1000) - KEYS * 1000
    for topic in (a, b):
        for i in range(KEYS):
            producer.produce(topic, value=value, key=f"0.bl.k{i}", partition=0, headers=[("pipeline", b"bl")],
                             timestamp=start_ms + i * 1000)
    assert producer.flush(30) == 0
    # the backlog is the version's to process: its group starts at offset 0, not at the end
    committer = Consumer(kafka.settings.consumer(dataflow_group_id(uid)))
    committer.commit(offsets=[TopicPartition(a, 0, 0), TopicPartition(b, 0, 0)], asynchronous=False)
    committer.close()

    config = RuntimeConfig(kafka=kafka.settings, partitions=1, state_dir=str(tmp_path / "state"),
                           start_timeout_s=60, commit_interval_ms=200)
    runner = runner_for(kind, msg, config)

    async def run():
        await runner.start()
        try:
            return await asyncio.to_thread(collect, kafka, sink, KEYS, 60.0, settle_s=1.0)
        finally:
            await runner.stop()

    got = asyncio.run(run())
    assert sorted(m.key() for m in got) == sorted(f"0.bl.k{i}".encode() for i in range(KEYS))
