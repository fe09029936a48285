"""The engine's /metrics, without a broker: partition tasks fed by hand, read by the collector.

Counts match what was fed, per step and by drop reason; a join waiting for its other branch and
a batch waiting for its size show as gauges; counters never go down when a partition is revoked
or its processors are rebuilt; the health server serves it all as Prometheus text.
"""
from __future__ import annotations

import asyncio
import urllib.request

import numpy as np
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dataflow import oip
from dataflow.broker import free_port
from dataflow.engine.metrics import METRICS, engine_registry
from dataflow.records import Record
from dataflow.runtime.base import RunnerState
from dataflow.runtime.tasks import PartitionTasks
from dataflow.state.partition import memory_partition_state
from dataflow.topology import compile_pipeline
from scheduler_min.convert import pipeline_message

NS = "seldon.default"
JOIN = pipeline_message({"name": "j", "steps": [
    {"name": "a"}, {"name": "b"}, {"name": "joined", "inputs": ["a", "b"]}]}, version=4, uid="uid-j")


class FakeRunner:
    """What the collector reads from a ``KafkaRunner``: msg, state, stats, step_totals."""

    def __init__(self, msg):
        self.msg = msg
        self.state = RunnerState.RUNNING
        self.stats = {"consumed": 7, "produced": 5, "failed": 1, "commits": 2, "restored": 3}
        self.tasks = PartitionTasks(lambda f: compile_pipeline(msg, store_factory=f), memory_partition_state)

    def step_totals(self):
        return self.tasks.step_totals()

    def assigned_partitions(self):
        return len(self.tasks.tasks)

    def lag(self):
        return {(f"{NS}.model.a.outputs", 0): 11}


def response(key, pipeline="j", ok=True):
    value = oip.make_response({"OUTPUT0": np.array([[1.0]], np.float32)}).SerializeToString() if ok else b"\xff\x00"
    return Record(topic="", key=key, value=value, headers=[("pipeline", pipeline.encode())], partition=0)


def scrape(runners) -> dict[tuple, float]:
    text = generate_latest(engine_registry(lambda: runners)).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("pipeline", "version")))
            out[(s.name, *labels)] = s.value
    return out


def step(name, metric, **labels):
    return (metric, *sorted({"step": name, **labels}.items()))


def feed(runner):
    task = runner.tasks.get(0)
    a_out, b_out = f"{NS}.model.a.outputs", f"{NS}.model.b.outputs"
    task.process(response("0.j.r1").evolve(topic=a_out), 0)            # joined: waits for b
    task.process(response("0.j.r2").evolve(topic=a_out), 0)            # joined: 2 waiting
    task.process(response("0.j.r3", pipeline="other").evolve(topic=a_out), 0)    # another pipeline's record
    task.process(response("0.j.r4", ok=False).evolve(topic=b_out), 0)  # undecodable


def test_counts_and_waiting_state_per_step():
    runner = FakeRunner(JOIN)
    runner.tasks.assign([0])
    feed(runner)
    m = scrape([runner])
    assert m[("dataflow_pipeline_info", ("state", "RUNNING"), ("uid", "uid-j"))] == 1
    assert m[("dataflow_pipeline_records_polled_total",)] == 7
    assert m[("dataflow_pipeline_errors_total",)] == 1
    assert m[("dataflow_pipeline_partitions",)] == 1
    assert m[("dataflow_pipeline_restored_records_total",)] == 3
    assert m[("dataflow_pipeline_consumer_lag", ("partition", "0"), ("topic", f"{NS}.model.a.outputs"))] == 11
    # step "joined" sees 3 records of a (one is another pipeline's) and 1 of b
    assert m[step("joined", "dataflow_step_records_consumed_total")] == 4
    assert m[step("joined", "dataflow_step_records_dropped_total", reason="filtered")] == 1
    assert m[step("joined", "dataflow_step_records_dropped_total", reason="malformed")] == 1
    assert m[step("joined", "dataflow_step_records_produced_total")] == 0
    assert m[step("joined", "dataflow_step_join_buffered_records")] == 2      # r1, r2 wait for branch b
    assert m[step("a", "dataflow_step_records_consumed_total")] == 0
    assert m[step("joined", "dataflow_step_latency_seconds_count")] == 3     # filtered records are not timed
    assert m[step("joined", "dataflow_step_latency_seconds_bucket", le="+Inf")] == 3
    assert m[step("joined", "dataflow_step_latency_seconds_sum")] > 0


def test_batch_rows_pending():
    msg = pipeline_message({"name": "j", "steps": [{"name": "a"}, {"name": "m", "inputs": ["a"],
                                                                    "batch": {"size": 3}}]})
    runner = FakeRunner(msg)
    runner.tasks.assign([0])
    task = runner.tasks.get(0)
    for i in range(2):
        task.process(response(f"0.j.r{i}").evolve(topic=f"{NS}.model.a.outputs"), 0)
    m = scrape([runner])
    assert m[step("m", "dataflow_step_batch_pending_rows")] == 2
    assert m[step("m", "dataflow_step_records_produced_total")] == 0
    task.process(response("0.j.r2").evolve(topic=f"{NS}.model.a.outputs"), 0)
    m = scrape([runner])
    assert m[step("m", "dataflow_step_batch_pending_rows")] == 0
    assert m[step("m", "dataflow_step_records_produced_total")] == 1


def test_counters_survive_revoke_and_rollback():
    runner = FakeRunner(JOIN)
    runner.tasks.assign([0])
    feed(runner)
    before = scrape([runner])
    runner.tasks.rollback()            # processors rebuilt over the last checkpoint
    runner.tasks.revoke([0])           # partition moved away
    after = scrape([runner])
    counters = [k for k in before if k[0].endswith(("_total", "_count", "_sum", "_bucket"))]
    assert counters and all(after[k] == before[k] for k in counters)
    assert after[step("joined", "dataflow_step_join_buffered_records")] == 0  # nothing live any more


def test_documented_names_are_exposed():
    runner = FakeRunner(JOIN)
    runner.tasks.assign([0])
    exposed = {k[0] for k in scrape([runner])}
    for name, (kind, _) in METRICS.items():
        assert (name + "_count" if kind == "histogram" else name) in exposed, name


def test_health_port_serves_metrics():
    from dataflow.engine.health import start_health_server

    port = free_port()
    runner = FakeRunner(JOIN)
    runner.tasks.assign([0])
    feed(runner)

    async def main():
        health = await start_health_server(port, ready=lambda: True, started=lambda: True, host="127.0.0.1",
                                           registry=engine_registry(lambda: [runner]))
        try:
            return await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        finally:
            await health.cleanup()

    text = asyncio.run(main())
    assert 'dataflow_step_join_buffered_records{pipeline="j",step="joined",version="4"} 2.0' in text


def test_step_timing_can_be_turned_off_and_counts_stay():
    from dataflow.runtime.base import RuntimeConfig

    runner = FakeRunner(JOIN)
    runner.tasks = PartitionTasks(lambda f: compile_pipeline(JOIN, store_factory=f,
                                                             settings=RuntimeConfig(step_latency=False)),
                                  memory_partition_state)
    runner.tasks.assign([0])
    feed(runner)
    m = scrape([runner])
    assert m[step("joined", "dataflow_step_records_consumed_total")] == 4
    assert m[step("joined", "dataflow_step_latency_seconds_count")] == 0
