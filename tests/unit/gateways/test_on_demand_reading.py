"""What a ``read_on_demand`` consumer fetches, and when a long-paused partition is read."""
from __future__ import annotations

from gateways import kafka_io
from gateways.kafka_io import _OnDemand


def test_partitions_are_fetched_while_expected_and_paused_otherwise():
    demand = _OnDemand()
    assigned = {"a": {0, 1}, "b": {0}}
    resume, pause = demand.changes(assigned, {})
    assert resume == [] and sorted(pause) == [("a", 0), ("a", 1), ("b", 0)]
    assert demand.changes(assigned, {}) == ([], [])   # nothing to do twice

    demand.expect("a")
    demand.expect("a")   # two requests in flight on one topic
    resume, pause = demand.changes(assigned, {})
    assert sorted(resume) == [("a", 0), ("a", 1)] and pause == []
    demand.stop_expecting("a")
    assert demand.changes(assigned, {}) == ([], [])   # one still awaited
    demand.stop_expecting("a")
    resume, pause = demand.changes(assigned, {})
    assert resume == [] and sorted(pause) == [("a", 0), ("a", 1)]


def test_a_new_assignment_is_set_again_and_a_removed_topic_forgotten():
    demand = _OnDemand()
    demand.changes({"a": {0}}, {})
    demand.assigned([("a", 0)])   # re-assigned after a rebalance: its state is librdkafka's again
    assert demand.changes({"a": {0}}, {}) == ([], [("a", 0)])
    demand.expect("a")
    demand.changes({"a": {0}}, {})
    assert demand.fetching == {("a", 0)}
    demand.changes({}, {})   # topic removed
    assert demand.fetching == set() and demand.paused_at == {}


def test_a_long_paused_partition_with_new_records_is_read_up_to_its_end(monkeypatch):
    monkeypatch.setattr(kafka_io, "CATCH_UP_AFTER_S", 0.0)
    demand = _OnDemand()
    assigned = {"a": {0}, "b": {0}}
    positions = {("a", 0): 10, ("b", 0): 7}
    demand.changes(assigned, positions)
    assert sorted(demand.catch_up_due()) == [("a", 0), ("b", 0)]
    demand.catch_up({("a", 0): 15, ("b", 0): 7}, positions)   # only "a" has new records
    assert demand.changes(assigned, positions) == ([("a", 0)], [])
    positions[("a", 0)] = 15   # read up to the end it had
    assert demand.changes(assigned, positions) == ([], [("a", 0)])


def test_a_catch_up_read_that_does_not_reach_the_end_is_given_up(monkeypatch):
    monkeypatch.setattr(kafka_io, "CATCH_UP_AFTER_S", 0.0)
    monkeypatch.setattr(kafka_io, "CATCH_UP_READ_S", 0.0)
    demand = _OnDemand()
    demand.changes({"a": {0}}, {("a", 0): 3})
    demand.catch_up({("a", 0): 9}, {("a", 0): 3})   # e.g. the end is a transaction marker
    assert demand.changes({"a": {0}}, {("a", 0): 3}) == ([], [])
    assert demand.catching_up == {}


def test_what_is_kept_per_topic_goes_with_the_topic():
    demand = _OnDemand()
    for i in range(100):   # pipelines loaded, called once and unloaded
        topic = f"t{i}"
        demand.changes({topic: {0}}, {})
        demand.expect(topic)
        demand.changes({topic: {0}}, {})
        demand.stop_expecting(topic)
        demand.changes({}, {})
    assert demand.expected == {} and demand.paused_at == {} and demand.catching_up == {}
    assert demand.fetching == set() and demand.settled == set()
