"""Engine metrics from a real ``KafkaRunner`` on the embedded broker: a join waiting for its second
branch shows its buffered records, counts match what was produced, the lag of a caught-up
partition is 0, and the records that came through were timed."""
from __future__ import annotations

import asyncio

import numpy as np
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dataflow import oip
from dataflow.engine.metrics import engine_registry
from dataflow.runtime.base import RuntimeConfig
from dataflow.runtime.kafka_runtime import KafkaRunner
from scheduler_min.convert import pipeline_message
from tests.integration.engine.harness import new_namer, produce
from tests.waiting import wait_until_async

N = 20


def samples(runner) -> dict[tuple, float]:
    text = generate_latest(engine_registry(lambda: [runner])).decode()
    return {(s.name, s.labels.get("step", ""), s.labels.get("topic", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.labels.get("reason") in (None, "filtered")}


def test_join_waiting_for_a_branch_shows_its_buffer(kafka, tmp_path):
    namer = new_namer(kafka)
    msg = pipeline_message({"name": "jm", "steps": [{"name": "a"}, {"name": "b"},
                                                   {"name": "j", "inputs": ["a", "b"]}]}, namer=namer)
    a_out = namer.model_outputs("a")
    value = oip.make_response({"OUTPUT0": np.array([[1.0]], np.float32)}).SerializeToString()

    async def main():
        runner = KafkaRunner(msg, RuntimeConfig(kafka=kafka.settings, state_dir=str(tmp_path), start_timeout_s=30,
                                                commit_interval_ms=200), memory_state=True)
        await runner.start()
        try:
            await asyncio.to_thread(produce, kafka, a_out, [(f"0.jm.r{i}", value) for i in range(N)], pipeline="jm")
            await wait_until_async(lambda: samples(runner).get(("dataflow_step_records_consumed_total", "j", ""), 0)
                                   >= N, 20, "the join step to see the records", interval=0.05)
            return samples(runner)
        finally:
            await runner.stop()

    m = asyncio.run(main())
    assert m[("dataflow_pipeline_records_polled_total", "", "")] == N
    assert m[("dataflow_step_join_buffered_records", "j", "")] == N      # all wait for branch b
    assert m[("dataflow_step_records_produced_total", "j", "")] == 0
    assert m[("dataflow_step_records_dropped_total", "j", "")] == 0      # reason="filtered"
    assert m[("dataflow_step_latency_seconds_count", "j", "")] == N
    assert m[("dataflow_pipeline_consumer_lag", "", a_out)] == 0
    assert m[("dataflow_pipeline_partitions", "", "")] == 1
