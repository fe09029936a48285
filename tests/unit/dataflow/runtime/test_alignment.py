"""The aligner hands the topics of a join over in record-time order, holding a topic that ran
ahead only while its partner has more to read, and never for long."""
from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from dataflow.joins import JoinType, StreamJoin
from dataflow.runtime.alignment import TimestampAligner, partner_topics
from dataflow.state.memory import MemoryStore

# A record here: (topic, partition, timestamp, name)
Rec = tuple[str, int, int, str]


def describe(r: Rec) -> tuple[str, int, int]:
    return r[0], r[1], r[2]


def aligner(**kw) -> TimestampAligner[Rec]:
    return TimestampAligner([{"a", "b"}], describe, **kw)


def always(topic: str, partition: int) -> bool:
    return True


def never(topic: str, partition: int) -> bool:
    return False


def names(records: list[Rec]) -> list[str]:
    return [r[3] for r in records]


def test_partners_come_from_every_group_of_two_topics_or_more():
    assert partner_topics([{"a", "b"}, {"b", "c"}, {"d"}]) == {
        "a": frozenset({"b"}), "b": frozenset({"a", "c"}), "c": frozenset({"b"})}


def test_no_groups_and_other_topics_pass_straight_through():
    assert not TimestampAligner([{"a"}], describe).active
    records = [("x", 0, 5, "x1"), ("x", 0, 1, "x2")]
    assert aligner().align(records, 0, always) == records


def test_a_topic_that_ran_ahead_waits_for_its_partner_then_both_go_in_time_order():
    al = aligner()
    got = al.align([("a", 0, 10, "a1"), ("a", 0, 20, "a2"), ("a", 0, 30, "a3")], 0, always)
    assert got == [] and al.holding   # b has more to read and nothing of it was read yet
    got = al.align([("b", 0, 10, "b1"), ("b", 0, 20, "b2")], 1, always)
    assert names(got) == ["a1", "b1", "a2", "b2"]   # a3 is newer than anything of b read so far
    assert names(al.align([("b", 0, 30, "b3")], 2, always)) == ["a3", "b3"]
    assert not al.holding


def test_nothing_waits_for_a_partner_read_to_its_end():
    al = aligner()
    assert names(al.align([("a", 0, 10, "a1"), ("a", 0, 20, "a2")], 0, never)) == ["a1", "a2"]


def test_partitions_are_aligned_separately():
    al = aligner()
    got = al.align([("a", 0, 10, "a0"), ("a", 1, 10, "a1"), ("b", 1, 10, "b1")], 0, always)
    assert names(got) == ["a1", "b1"]   # partition 0 still waits for b[0]


def test_a_silent_partner_delays_a_record_at_most_max_wait():
    al = aligner(max_wait_ms=100)
    assert al.align([("a", 0, 10, "a1")], 1000, always) == []
    assert al.align([], 1099, always) == []
    assert names(al.align([], 1100, always)) == ["a1"]


def test_at_most_max_held_records_wait_the_oldest_go_first():
    al = aligner(max_held=2)
    got = al.align([("a", 0, t, f"a{t}") for t in range(5)], 0, always)
    assert names(got) == ["a0", "a1", "a2"]


def test_records_of_one_topic_keep_their_offset_order_whatever_their_timestamps():
    al = aligner()
    al.align([("a", 0, 30, "a1"), ("a", 0, 10, "a2")], 0, always)
    got = al.align([("b", 0, 20, "b1"), ("b", 0, 40, "b2")], 0, never)
    assert [n for n in names(got) if n.startswith("a")] == ["a1", "a2"]


def test_drop_forgets_what_is_held_and_says_of_which_partitions():
    al = aligner()
    al.align([("a", 0, 10, "a0"), ("a", 1, 10, "a1")], 0, always)
    assert al.drop([("a", 1), ("b", 1)]) == {("a", 1)}
    assert al.drop() == {("a", 0)}
    assert not al.holding
    assert al.align([], 0, never) == []


record = st.tuples(st.sampled_from("abx"), st.integers(0, 1), st.integers(0, 50))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(record, max_size=8), max_size=8))
def test_every_record_comes_out_once_in_its_topic_partition_order(batches):
    """Property: whatever arrives, once nothing more is to be read everything has come out, each
    record once, each topic partition in the order it was read."""
    al = TimestampAligner([{"a", "b"}], describe)
    fed: list[Rec] = []
    out: list[Rec] = []
    for i, batch in enumerate(batches):
        recs = [(t, p, ts, f"{i}.{j}") for j, (t, p, ts) in enumerate(batch)]
        fed += recs
        out += al.align(recs, i, always)
    out += al.align([], len(batches), never)
    assert sorted(names(out)) == sorted(names(fed))
    by_key_fed, by_key_out = defaultdict(list), defaultdict(list)
    for r in fed:
        by_key_fed[r[:2]].append(r[3])
    for r in out:
        by_key_out[r[:2]].append(r[3])
    assert by_key_out == by_key_fed


def test_a_backlog_longer_than_the_window_joins_completely_when_aligned():
    """What the aligner is for: both branches hold 300 keys one second apart (a 60 s window) and
    the consumer hands all of branch a over before branch b. In that order a join keeps only
    the last window's worth; aligned, every key joins."""
    keys = range(300)
    a = [("a", 0, k * 1000, f"k{k}") for k in keys]
    b = [("b", 0, k * 1000, f"k{k}") for k in keys]

    def joined(records: list[Rec]) -> int:
        join = StreamJoin(MemoryStore(), branches=2, kind=JoinType.INNER, window_ms=60_000)
        return sum(len(join.add_value(0 if t == "a" else 1, name, b"v", [], ts, p, 0))
                   for t, p, ts, name in records)

    assert joined(a + b) == 61
    al = aligner()
    aligned = al.align(a, 0, always) + al.align(b, 1, never)
    assert joined(aligned) == 300
