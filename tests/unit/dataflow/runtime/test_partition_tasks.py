"""Partition tasks without a broker: state moves with its partition. A task's changelog entries,
replayed into a new replica's state before its processors are built, carry pending batches, outer
join partials and cycle counters over; a revoked partition stops punctuating without errors; one
failing step never stops the others."""
from __future__ import annotations

import numpy as np

from dataflow import oip
from dataflow.headers import PIPELINE_ERRORS
from dataflow.records import Record
from dataflow.runtime.tasks import PartitionTasks, probe
from dataflow.state.partition import memory_partition_state
from dataflow.topology import TopologySettings, compile_pipeline
from dataflow.topology.builders import create_message, step_update
from scheduler_min.convert import pipeline_message

NS = "seldon.default"
V = np.array([1.0, 2.0], dtype=np.float32)


def builder(msg, **settings):
    return lambda factory: compile_pipeline(msg, store_factory=factory, settings=TopologySettings(**settings))


def record(topic, value, key, pipeline, partition=0, ts=0):
    value = value if isinstance(value, bytes) else value.SerializeToString()
    return Record(topic=topic, key=key, value=value, headers=[("pipeline", pipeline.encode())],
                  timestamp=ts, partition=partition)


def row(i):
    return oip.make_request({"INPUT": np.array([[i, i]], np.float32)}, id=f"r{i}")


class Replica:
    """One engine replica's tasks of a pipeline version; ``changelog`` stands in for the topic."""

    def __init__(self, build, changelog):
        self.changelog = changelog
        self.tasks = PartitionTasks(build, memory_partition_state)

    def assign(self, *partitions):
        def restore(states):
            for s in states:
                entries = [(k, v) for p, k, v in self.changelog if p == s.partition]
                s.apply_restored(entries, len(self.changelog))
        self.tasks.assign(partitions, restore)

    def checkpoint(self):
        self.changelog.extend(self.tasks.changelog_entries())
        self.tasks.commit()

    def process(self, rec, now_ms=0):
        return self.tasks.get(rec.partition).process(rec, now_ms)


def test_a_pending_batch_restored_on_another_replica_completes():
    msg = pipeline_message({"name": "p", "steps": [{"name": "m", "batch": {"size": 2}}]})
    src = f"{NS}.pipeline.p.inputs"
    changelog = []
    a = Replica(builder(msg), changelog)
    a.assign(0)
    assert a.process(record(src, row(0), "0.p.r0", "p")) == []
    a.checkpoint()
    a.tasks.revoke([0])

    b = Replica(builder(msg), changelog)
    b.assign(0)
    [out] = b.process(record(src, row(1), "0.p.r1", "p"))
    arrays = oip.request_arrays(oip.parse_request(out.value))
    np.testing.assert_allclose(arrays["INPUT"], [[0, 0], [1, 1]])


def test_a_restored_outer_join_partial_fires_when_its_window_closes():
    msg = pipeline_message({"name": "p", "steps": [
        {"name": "a", "inputs": ["p.inputs.INPUT"]}, {"name": "b", "inputs": ["p.inputs.INPUT"]},
        {"name": "j", "inputs": ["a", "b"], "inputsJoinType": "outer", "joinWindowMs": 500}]})
    a_out = f"{NS}.model.a.outputs"
    changelog = []
    first = Replica(builder(msg), changelog)
    first.assign(0)
    assert first.process(record(a_out, oip.make_response({"A": V}), "0.p.r1", "p"), now_ms=1000) == []
    first.checkpoint()
    first.tasks.revoke([0])

    second = Replica(builder(msg), changelog)
    second.assign(0)
    assert second.tasks.punctuate(1499) == []
    [partial] = second.tasks.punctuate(1500)
    assert partial.topic == f"{NS}.model.j.inputs" and partial.key == "0.p.r1"
    assert [t.name for t in oip.parse_request(partial.value).inputs] == ["A"]


def test_cycle_counters_follow_the_partition():
    inc_in, inc_out = f"{NS}.model.inc.inputs", f"{NS}.model.inc.outputs"
    msg = create_message("loop", [
        step_update(inc_in, [(f"{NS}.pipeline.loop.inputs", "loop")], pipeline="loop"),
        step_update(inc_in, [(inc_out, "loop")], pipeline="loop", tensor_map=[("loop", f"{inc_out}.OUTPUT", "INPUT")]),
        step_update(f"{NS}.pipeline.loop.outputs", [(f"{NS}.errors.errors", "loop")], pipeline="loop"),
    ], allow_cycles=True, max_step_revisits=2)
    response = oip.make_response({"OUTPUT": V})
    changelog = []
    a = Replica(builder(msg), changelog)
    a.assign(0)
    a.process(record(f"{NS}.pipeline.loop.inputs", oip.make_request({"INPUT": V}), "0.loop.r1", "loop"))
    a.process(record(inc_out, response, "0.loop.r1", "loop"))          # second visit of inc
    a.checkpoint()
    a.tasks.revoke([0])

    b = Replica(builder(msg), changelog)
    b.assign(0)
    [third] = b.process(record(inc_out, response, "0.loop.r1", "loop"))
    assert third.topic == inc_in
    [fourth] = b.process(record(inc_out, response, "0.loop.r1", "loop"))
    assert fourth.topic == f"{NS}.errors.errors" and fourth.headers[-1] == (PIPELINE_ERRORS, b"loop")


def window_batches(steps=("m",)):
    return pipeline_message({"name": "p", "steps": [{"name": s, "batch": {"size": 10, "windowMs": 100}}
                                                    for s in steps]})


def test_a_revoked_partition_stops_punctuating_and_the_others_go_on():
    src = f"{NS}.pipeline.p.inputs"
    r = Replica(builder(window_batches()), [])
    r.assign(0, 1)
    r.process(record(src, row(0), "0.p.r0", "p", partition=0), now_ms=0)
    r.process(record(src, row(1), "1.p.r1", "p", partition=1), now_ms=0)
    r.checkpoint()
    r.tasks.revoke([0])
    [out] = r.tasks.punctuate(100)
    assert out.key == "1.p.r1"
    assert r.tasks.punctuate(10_000) == []


def test_one_failing_step_is_reported_and_the_others_still_punctuate():
    src = f"{NS}.pipeline.p.inputs"
    r = Replica(builder(window_batches(("m1", "m2"))), [])
    r.assign(0)
    r.process(record(src, row(0), "0.p.r0", "p"), now_ms=0)
    pipeline = r.tasks.get(0).pipeline
    broken = next(s for s in pipeline.steps if s.step.name == "m1")

    def boom(now_ms):
        raise RuntimeError("disk on fire")
    broken.batcher.punctuate = boom
    [out] = r.tasks.punctuate(100)
    assert out.topic == f"{NS}.model.m2.inputs"
    assert pipeline.stats.punctuate_errors == 1
    assert pipeline.punctuate_failures == {"m1": "RuntimeError: disk on fire"}


def test_rollback_rebuilds_processors_over_the_last_checkpoint():
    src = f"{NS}.pipeline.p.inputs"
    msg = pipeline_message({"name": "p", "steps": [{"name": "m", "batch": {"size": 2}}]})
    r = Replica(builder(msg), [])
    r.assign(0)
    r.process(record(src, row(0), "0.p.r0", "p"))
    r.checkpoint()
    r.process(record(src, row(1), "0.p.r1", "p"))     # completes a batch: not checkpointed
    r.tasks.rollback()
    [out] = r.process(record(src, row(1), "0.p.r1", "p"))  # processed again after a rewind
    assert oip.request_arrays(oip.parse_request(out.value))["INPUT"].shape == (2, 2)


def test_stateless_pipelines_open_no_state():
    chain = pipeline_message({"name": "c", "steps": [{"name": "m"}]})
    assert not probe(builder(chain))[1]
    assert probe(builder(window_batches()))[1]
