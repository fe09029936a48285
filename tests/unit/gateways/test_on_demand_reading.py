"""What a ``read_on_demand`` consumer fetches, and when a paused partition may skip ahead."""
from __future__ import annotations

from gateways import kafka_io
from gateways.kafka_io import _OnDemand


def test_partitions_are_fetched_while_expected_and_paused_otherwise():
    demand = _OnDemand()
    assigned = {"a": {0, 1}, "b": {0}}
    resume, pause = demand.changes(assigned)
    assert resume == [] and sorted(pause) == [("a", 0), ("a", 1), ("b", 0)]
    assert demand.changes(assigned) == ([], [])   # nothing to do twice

    demand.expect("a")
    demand.expect("a")   # two requests in flight on one topic
    resume, pause = demand.changes(assigned)
    assert sorted(resume) == [("a", 0), ("a", 1)] and pause == []
    demand.stop_expecting("a")
    assert demand.changes(assigned) == ([], [])   # one still awaited
    demand.stop_expecting("a")
    resume, pause = demand.changes(assigned)
    assert resume == [] and sorted(pause) == [("a", 0), ("a", 1)]


def test_a_new_assignment_is_set_again_and_a_removed_topic_forgotten():
    demand = _OnDemand()
    demand.changes({"a": {0}})
    demand.assigned([("a", 0)])   # re-assigned after a rebalance: its state is librdkafka's again
    assert demand.changes({"a": {0}}) == ([], [("a", 0)])
    demand.expect("a")
    demand.changes({"a": {0}})
    assert demand.fetching == {("a", 0)}
    demand.changes({})   # topic removed
    assert demand.fetching == set() and demand.paused_at == {}


def test_a_paused_partition_skips_ahead_only_if_nothing_was_expected_meanwhile(monkeypatch):
    monkeypatch.setattr(kafka_io, "CATCH_UP_AFTER_S", 0.0)
    demand = _OnDemand()
    demand.changes({"a": {0}, "b": {0}})
    due = demand.catch_up_due({"a": {0}, "b": {0}})
    assert set(due) == {("a", 0), ("b", 0)}
    # while the end offsets were read, a request for "a" started (and may even have finished):
    # its answer may be before the end offset read, so "a" must not skip
    demand.expect("a")
    demand.stop_expecting("a")
    assert demand.unchanged_since(due) == {("b", 0)}
    demand.expect("b")   # "b" is expected now: no skipping either
    assert demand.unchanged_since(due) == set()
    assert ("b", 0) not in demand.catch_up_due({"a": {0}, "b": {0}})


def test_what_is_kept_per_topic_goes_with_the_topic():
    demand = _OnDemand()
    for i in range(100):   # pipelines loaded, called once and unloaded
        topic = f"t{i}"
        demand.changes({topic: {0}})
        demand.expect(topic)
        demand.changes({topic: {0}})
        demand.stop_expecting(topic)
        demand.changes({})
    assert demand.expected == {} and demand.generation == {} and demand.paused_at == {}
    assert demand.fetching == set() and demand.settled == set()
