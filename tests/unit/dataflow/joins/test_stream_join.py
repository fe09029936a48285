"""StreamJoin / TriggerGate over a MemoryStore: inner/outer/any semantics, windows, expiry, properties."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dataflow.joins import JoinType, StreamJoin, TriggerGate
from dataflow.records import Record
from dataflow.state import MemoryStore

W = 100


def rec(key, value, ts=0, headers=None):
    return Record(topic="t", key=key, value=value, headers=headers or [("from", value)], timestamp=ts)


def join(kind, branches=2, window=W):
    return StreamJoin(MemoryStore(), branches=branches, kind=kind, window_ms=window)


def test_inner_two_way_emits_on_completion_with_last_headers_and_max_timestamp():
    j = join(JoinType.INNER)
    assert j.add(1, rec("k", b"right", ts=50), now_ms=0) == []
    [r] = j.add(0, rec("k", b"left", ts=20), now_ms=1)
    assert r.values == [b"left", b"right"]          # branch order, not arrival order
    assert r.headers == [("from", b"left")]          # headers of the arrival that completed it
    assert r.timestamp == 50 and r.key == "k"


def test_inner_three_way_and_keys_do_not_mix():
    j = join(JoinType.INNER, branches=3)
    assert j.add(0, rec("a", b"a0"), 0) == []
    assert j.add(1, rec("b", b"b1"), 0) == []
    assert j.add(1, rec("a", b"a1"), 0) == []
    [r] = j.add(2, rec("a", b"a2"), 0)
    assert r.values == [b"a0", b"a1", b"a2"]


def test_inner_records_outside_the_window_do_not_join():
    j = join(JoinType.INNER)
    j.add(0, rec("k", b"l", ts=W + 5), 0)
    assert j.add(1, rec("k", b"r", ts=4), 0) == []           # |dt| = W + 1
    [r] = j.add(1, rec("k", b"r2", ts=5), 0)                  # |dt| = W
    assert r.values == [b"l", b"r2"]


def test_inner_repeated_key_joins_with_every_buffered_match():
    j = join(JoinType.INNER)
    j.add(0, rec("k", b"l1"), 0)
    j.add(0, rec("k", b"l2"), 0)
    results = j.add(1, rec("k", b"r"), 0)
    assert [r.values for r in results] == [[b"l1", b"r"], [b"l2", b"r"]]


def test_wall_clock_expiry_removes_buffers():
    j = join(JoinType.INNER)
    j.add(0, rec("k", b"l"), now_ms=10)
    assert len(j) == 1 and j.next_deadline() == 10 + W
    assert j.punctuate(10 + W - 1) == [] and len(j) == 1
    j.punctuate(10 + W)
    j.flush()
    assert len(j) == 0 and len(j.store) == 1        # only the stream-time marker remains
    assert j.add(1, rec("k", b"r"), now_ms=10 + W) == []


def test_record_time_expiry_removes_stale_buffers():
    j = join(JoinType.INNER)
    j.add(0, rec("old", b"l", ts=0), now_ms=0)
    j.add(0, rec("new", b"l", ts=5 * W), now_ms=1)   # stream time jumps ahead
    j.punctuate(2)                                   # wall window not over, record time is
    assert len(j) == 1
    assert j.add(1, rec("old", b"r", ts=0), now_ms=3) == []


def test_outer_full_merge_then_no_partial():
    j = join(JoinType.OUTER)
    j.add(0, rec("k", b"l"), 0)
    [r] = j.add(1, rec("k", b"r"), 0)
    assert r.values == [b"l", b"r"]
    assert j.punctuate(10 * W) == []
    assert len(j) == 0


def test_outer_partial_once_at_window_close_by_wall_clock():
    j = join(JoinType.OUTER, branches=3)
    j.add(0, rec("k", b"a", ts=5), now_ms=0)
    j.add(2, rec("k", b"c", ts=7), now_ms=30)
    assert j.punctuate(W - 1) == []
    [r] = j.punctuate(W)
    assert r.values == [b"a", None, b"c"] and r.timestamp == 7
    assert r.headers == [("from", b"c")]             # the last arrival among the parts
    assert j.punctuate(W + 30) == [] and len(j) == 0


def test_any_forwards_every_arrival_alone():
    j = join(JoinType.ANY)
    [a] = j.add(0, rec("k", b"l"), 0)
    [b] = j.add(1, rec("k", b"r"), 0)
    assert a.values == [b"l", None] and b.values == [None, b"r"]
    assert j.punctuate(10 * W) == []


def test_trigger_gate_single_trigger_releases_data_either_order():
    g = TriggerGate(MemoryStore(), None, triggers=1, triggers_join=JoinType.INNER, window_ms=W)
    assert g.add_data(rec("k", b"data", ts=1), 0) == []
    [out] = g.add_trigger(0, rec("k", b"trigger", ts=2), 0)
    assert out.value == b"data" and out.timestamp == 2
    assert g.add_trigger(0, rec("j", b"trigger"), 0) == []
    [out] = g.add_data(rec("j", b"data2"), 0)
    assert out.value == b"data2"


def test_trigger_gate_combines_triggers_inner_and_any():
    inner = TriggerGate(MemoryStore(), MemoryStore(), triggers=2, triggers_join=JoinType.INNER, window_ms=W)
    inner.add_data(rec("k", b"data"), 0)
    assert inner.add_trigger(0, rec("k", b"t0"), 0) == []
    assert [r.value for r in inner.add_trigger(1, rec("k", b"t1"), 0)] == [b"data"]
    any_ = TriggerGate(MemoryStore(), MemoryStore(), triggers=2, triggers_join=JoinType.ANY, window_ms=W)
    any_.add_data(rec("k", b"data"), 0)
    assert [r.value for r in any_.add_trigger(1, rec("k", b"t1"), 0)] == [b"data"]


def test_trigger_gate_outer_triggers_fire_at_window_close():
    g = TriggerGate(MemoryStore(), MemoryStore(), triggers=2, triggers_join=JoinType.OUTER, window_ms=W)
    g.add_data(rec("k", b"data"), 0)
    assert g.add_trigger(0, rec("k", b"t0"), 0) == []
    # the partial trigger is released before the gate's own buffers expire at the same tick
    assert [r.value for r in g.punctuate(W)] == [b"data"]
    assert g.punctuate(2 * W) == []
    g2 = TriggerGate(MemoryStore(), MemoryStore(), triggers=2, triggers_join=JoinType.OUTER, window_ms=W)
    g2.add_trigger(0, rec("k", b"t0", ts=0), 0)
    g2.add_data(rec("k", b"data", ts=0), W // 2)
    assert [r.value for r in g2.punctuate(W)] == [b"data"]


# ------------------------------------------------------------------------------ properties

arrivals = st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 2)), unique=True, max_size=18)


@settings(max_examples=60, deadline=None)
@given(arrivals, st.randoms())
def test_inner_emits_each_complete_key_exactly_once(pairs, rnd):
    """Each branch sees a key at most once, all within the window: one result per complete key."""
    rnd.shuffle(pairs)
    j = join(JoinType.INNER, branches=3)
    emitted = []
    for now, (key, branch) in enumerate(pairs):
        emitted += j.add(branch, rec(key, f"{key}{branch}".encode(), ts=now), now)
    complete = {k for k in "abcdef" if {b for kk, b in pairs if kk == k} == {0, 1, 2}}
    assert sorted(r.key for r in emitted) == sorted(complete)
    for r in emitted:
        assert r.values == [f"{r.key}{b}".encode() for b in range(3)]


@settings(max_examples=60, deadline=None)
@given(arrivals, st.randoms())
def test_outer_emits_exactly_one_record_per_key(pairs, rnd):
    rnd.shuffle(pairs)
    j = join(JoinType.OUTER, branches=3)
    emitted = []
    for i, (key, branch) in enumerate(pairs):
        emitted += j.add(branch, rec(key, f"{key}{branch}".encode(), ts=i), now_ms=i)
        emitted += j.punctuate(i)
    emitted += j.punctuate(len(pairs) + W)
    assert sorted(r.key for r in emitted) == sorted({k for k, _ in pairs})
    for r in emitted:
        present = {b for k, b in pairs if k == r.key}
        assert [i for i, v in enumerate(r.values) if v is not None] == sorted(present)
    assert len(j) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 1), st.integers(0, 500)), max_size=30),
       st.integers(1, 200))
def test_expiry_drops_every_stale_entry(events, window):
    j = join(JoinType.INNER, window=window)
    now = 0
    for key, branch, dt in events:
        now += dt
        j.add(branch, rec(key, b"v", ts=now), now)
        j.punctuate(now)
        j.flush()
        # nothing older than the window (wall or record time) survives a punctuate
        for _, raw in j.store.items(b"g"):
            from dataflow.joins.entries import decode_entries
            for e in decode_entries(raw):
                assert now - e.wall_ms < window or e.wall_ms == now
    j.punctuate(now + window)
    assert len(j) == 0


events = st.lists(st.one_of(
    st.tuples(st.just("add"), st.sampled_from("abc"), st.integers(0, 2), st.integers(-60, 60), st.integers(0, 40)),
    st.tuples(st.just("punctuate"), st.integers(0, 80)),
    st.tuples(st.just("flush")),
), max_size=40)


@settings(max_examples=600, deadline=None)
@given(events, st.sampled_from([JoinType.INNER, JoinType.OUTER]), st.integers(2, 3), st.integers(1, 50))
def test_a_join_rebuilt_from_its_store_behaves_as_the_one_that_wrote_it(events, kind, branches, window):
    """Expiry indexes and the buffered count are rebuilt from the store (a restore, a rollback):
    after every flush, a join built over the store gives the same results and writes the same
    state from then on (the live join keeps the groups it flushed decoded, the rebuilt one reads
    them back), and the buffered count always matches the records held."""
    store = MemoryStore()
    live = StreamJoin(store, branches=branches, kind=kind, window_ms=window)
    rebuilt: StreamJoin | None = None
    shadow = MemoryStore()
    now, ts = 0, 1000

    def both(call):
        got = call(live)
        if rebuilt is not None:
            assert [(r.key, r.values, r.headers, r.timestamp) for r in call(rebuilt)] == \
                   [(r.key, r.values, r.headers, r.timestamp) for r in got]

    for i, event in enumerate(events):
        if event[0] == "add":
            _, key, branch, dts, dnow = event
            now, ts = now + dnow, ts + dts
            record = rec(key, f"v{i}".encode(), ts=ts)
            both(lambda j, b=branch % branches, r=record, n=now: j.add(b, r, n))
        elif event[0] == "punctuate":
            now += event[1]
            both(lambda j, n=now: j.punctuate(n))
        else:
            live.flush()
            if rebuilt is not None:   # the rebuilt join (which reads every group from its store)
                rebuilt.flush()       # writes what the live one (which keeps flushed groups) wrote
                assert shadow._data == store._data
            shadow._data = dict(store._data)
            rebuilt = StreamJoin(shadow, branches=branches, kind=kind, window_ms=window)
        assert live.buffered == len(live)
        if rebuilt is not None:
            assert rebuilt.buffered == len(rebuilt) == len(live)
    both(lambda j: j.punctuate(now + 10 * window + 10_000))
    assert live.buffered == len(live) == 0


def test_only_an_outer_join_buffers_and_stores_headers():
    """Inner results carry the arrival's headers, so an inner join's state holds none; an outer
    join's partial carries a buffered record's headers, so it stores them (and reads them back)."""
    from dataflow.joins.entries import GROUP_PREFIX, decode_entries

    for kind, expected in ((JoinType.INNER, []), (JoinType.OUTER, [("from", b"l")])):
        j = join(kind)
        j.add(0, rec("k", b"l", headers=[("from", b"l")]), 0)
        j.flush()
        [(_, raw)] = list(j.store.items(GROUP_PREFIX))
        assert [e.headers for e in decode_entries(raw)] == [expected]
        [r] = j.add(1, rec("k", b"r", headers=[("from", b"r")]), 1)
        assert r.headers == [("from", b"r")]
    j = join(JoinType.OUTER)
    j.add(0, rec("k", b"l", headers=[("from", b"l")]), 0)
    j.flush()
    rebuilt = StreamJoin(j.store, branches=2, kind=JoinType.OUTER, window_ms=W)
    [partial] = rebuilt.punctuate(W)
    assert partial.values == [b"l", None] and partial.headers == [("from", b"l")]
