"""ChangelogStore / ChangelogWriter without a broker: what gets recorded for which partition,
punctuate-time writes, restore application and dropping revoked partitions."""
from __future__ import annotations

import pytest

from dataflow.runtime.changelog import (ChangelogStore, ChangelogWriter, changelog_key, changelog_topic,
                                        split_changelog_key)
from dataflow.state import MemoryStore


def make(name="join:0"):
    writer = ChangelogWriter()
    return writer, ChangelogStore(MemoryStore(name), name, writer)


def test_put_and_delete_are_local_and_recorded_for_the_current_partition():
    writer, store = make()
    writer.current_partition = 2
    store.put(b"k", b"v")
    assert store.get(b"k") == b"v"
    store.delete(b"k")
    assert store.get(b"k") is None
    assert writer.drain() == [(2, b"join:0\x00k", b"v"), (2, b"join:0\x00k", None)]
    assert writer.drain() == []


def test_punctuate_time_writes_go_to_the_partition_the_key_was_written_from():
    writer, store = make()
    writer.current_partition = 3
    store.put(b"k", b"v1")
    writer.current_partition = None  # punctuate: no current record
    store.put(b"k", b"v2")
    store.delete(b"k")
    writer.drain()
    store.delete(b"k")  # unknown now: nothing to follow, nothing recorded
    assert writer.drain() == []
    writer.current_partition = 1
    store.put(b"k", b"v3")
    writer.current_partition = None
    store.delete(b"k")
    assert writer.drain() == [(1, b"join:0\x00k", b"v3"), (1, b"join:0\x00k", None)]


def test_punctuate_delete_after_restore_uses_the_restored_partition():
    writer, store = make()
    writer.apply(5, changelog_key("join:0", b"k"), b"v")
    assert store.get(b"k") == b"v"
    assert writer.drain() == []  # restore does not re-record
    store.delete(b"k")
    assert writer.drain() == [(5, b"join:0\x00k", None)]


def test_restore_apply_is_idempotent_and_tombstones_delete():
    writer, store = make()
    for _ in range(2):
        writer.apply(0, changelog_key("join:0", b"a"), b"1")
        writer.apply(0, changelog_key("join:0", b"b"), b"2")
        writer.apply(0, changelog_key("join:0", b"a"), None)
        writer.apply(0, changelog_key("unknown-store", b"x"), b"ignored")
    assert list(store.items()) == [(b"b", b"2")]


def test_drop_partitions_removes_only_their_local_entries_without_tombstones():
    writer, store = make()
    writer.current_partition = 0
    store.put(b"p0", b"x")
    writer.current_partition = 1
    store.put(b"p1", b"y")
    writer.drain()
    assert writer.drop_partitions([1]) == 1
    assert list(store.items()) == [(b"p0", b"x")]
    assert writer.drain() == []


def test_keys_and_topic_name():
    assert split_changelog_key(changelog_key("cycle:counter", b"a\x00b")) == ("cycle:counter", b"a\x00b")
    with pytest.raises(ValueError, match="no store separator"):
        split_changelog_key(b"plain")
    assert changelog_topic("seldon-ns-p-uid") == "seldon-ns-p-uid-state-changelog"
