"""PartitionState without a broker: read-your-writes over a write buffer, one batch per commit,
rollback, restore bookkeeping; the same behaviour on the memory and RocksDB backends."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflow.state.partition import MemoryBackend, PartitionState, RocksBackend


@pytest.fixture(params=["memory", "rocks"])
def state(request, tmp_path):
    backend = MemoryBackend() if request.param == "memory" else RocksBackend(str(tmp_path / "db"))
    s = PartitionState(backend, 3)
    yield s
    s.close()


def test_reads_see_uncommitted_writes_and_the_database_sees_them_only_after_commit(state):
    store = state.store("join:a")
    store.put(b"k", b"v")
    assert store.get(b"k") == b"v"
    assert state.backend.get(b"join:a\x00k") is None
    assert state.changes() == [(b"join:a\x00k", b"v")]
    state.commit()
    assert state.backend.get(b"join:a\x00k") == b"v"
    assert state.changes() == [] and not state.dirty


def test_the_buffer_keeps_the_last_value_per_key_and_deletes_as_tombstones(state):
    store = state.store("s")
    store.put(b"k", b"1")
    state.commit()
    store.put(b"k", b"2")
    store.put(b"k", b"3")
    store.delete(b"k")
    assert store.get(b"k") is None
    assert state.changes() == [(b"s\x00k", None)]
    state.commit()
    assert state.backend.get(b"s\x00k") is None


def test_rollback_forgets_writes_since_the_last_commit(state):
    store = state.store("s")
    store.put(b"a", b"1")
    state.commit()
    store.put(b"a", b"2")
    store.put(b"b", b"x")
    state.rollback()
    assert store.get(b"a") == b"1" and store.get(b"b") is None and not state.dirty


def test_stores_are_separate_prefixes_and_items_overlay_the_buffer(state):
    a, ab = state.store("a"), state.store("ab")
    a.put(b"1", b"x")
    a.put(b"2", b"y")
    ab.put(b"1", b"z")
    state.commit()
    a.delete(b"1")
    a.put(b"3", b"w")
    assert list(a.items()) == [(b"2", b"y"), (b"3", b"w")]
    assert list(ab.items()) == [(b"1", b"z")]
    assert len(a) == 2


def test_restored_records_go_to_the_database_with_the_next_changelog_position(state):
    assert state.changelog_position() == 0
    state.apply_restored([(b"s\x00k", b"v"), (b"s\x00gone", None)], 42)
    assert state.store("s").get(b"k") == b"v"
    assert state.changelog_position() == 42
    state.commit(changelog_position=50)
    assert state.changelog_position() == 50
    assert list(state.store("s").items()) == [(b"k", b"v")]   # bookkeeping is not a store entry
    state.wipe()
    assert state.changelog_position() == 0 and state.store("s").get(b"k") is None


def test_rocks_state_survives_a_reopen(tmp_path):
    s = PartitionState(RocksBackend(str(tmp_path / "db")), 0)
    s.store("s").put(b"k", b"v")
    s.commit(changelog_position=7)
    s.store("s").put(b"lost", b"uncommitted")
    s.close()
    again = PartitionState(RocksBackend(str(tmp_path / "db")), 0)
    assert again.store("s").get(b"k") == b"v" and again.store("s").get(b"lost") is None
    assert again.changelog_position() == 7
    again.close()


ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from([b"a", b"b", b"c"]), st.binary(max_size=3)),
    st.tuples(st.just("delete"), st.sampled_from([b"a", b"b", b"c"]), st.none()),
    st.tuples(st.just("commit"), st.none(), st.none()),
    st.tuples(st.just("rollback"), st.none(), st.none()),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_state_behaves_like_a_dict_with_a_savepoint(operations):
    state = PartitionState(MemoryBackend(), 0)
    store = state.store("s")
    committed: dict[bytes, bytes] = {}
    current: dict[bytes, bytes] = {}
    for op, key, value in operations:
        if op == "put":
            store.put(key, value)
            current[key] = value
        elif op == "delete":
            store.delete(key)
            current.pop(key, None)
        elif op == "commit":
            state.commit()
            committed = dict(current)
        else:
            state.rollback()
            current = dict(committed)
        assert dict(store.items()) == current
    # replaying the changes on the committed copy gives the current state (what restore does)
    replica = PartitionState(MemoryBackend(), 0)
    replica.apply_restored([(b"s\x00" + k, v) for k, v in committed.items()], 1)
    replica.apply_restored(state.changes(), 2)
    assert dict(replica.store("s").items()) == current


writes = st.lists(st.dictionaries(st.sampled_from([b"a", b"b", b"c", b"d"]), st.none() | st.binary(max_size=3),
                                  max_size=4), max_size=6)


@settings(max_examples=200, deadline=None)
@given(writes)
def test_a_write_of_many_keys_is_the_puts_and_deletes_one_by_one(batches):
    """``StateStore.write`` (one call per join flush) leaves the same state and the same changelog
    entries, in the same order, as ``put`` / ``delete`` per key, on a partition's store and on the
    base class's default (a memory store)."""
    from dataflow.state import MemoryStore

    one, many = PartitionState(MemoryBackend(), 0), PartitionState(MemoryBackend(), 0)
    single, memory = MemoryStore(), MemoryStore()
    for changes in batches:
        for key, value in changes.items():
            for s in (one.store("s"), single):
                if value is None:
                    s.delete(key)
                else:
                    s.put(key, value)
        many.store("s").write(changes)
        memory.write(changes)
        assert many.changes() == one.changes()
        assert list(many.store("s").items()) == list(one.store("s").items())
        assert list(memory.items()) == list(single.items())
