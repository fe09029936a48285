"""StateStore backends behave alike (get/put/delete, prefix iteration in key order), and a
partition's RocksDB state carries a pending join across a restart."""
from __future__ import annotations

import numpy as np
import pytest

from dataflow import oip
from dataflow.state import MemoryStore, rocks_partition_state
from dataflow.topology import compile_pipeline
from dataflow_testing.driver import PipelineTestDriver
from scheduler_min.convert import pipeline_message


@pytest.fixture(params=["memory", "partition-rocks", "partition-rocks-committed"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore("m")
        return
    state = rocks_partition_state(str(tmp_path), 0)
    s = state.store("r")
    if request.param == "partition-rocks-committed":   # every write goes to the database at once
        put, delete = s.put, s.delete
        s.put = lambda k, v: (put(k, v), state.commit())
        s.delete = lambda k: (delete(k), state.commit())
    yield s
    state.close()


def test_basic_operations_and_prefix_order(store):
    assert store.get(b"x") is None
    for k in (b"b2", b"a1", b"b1", b"b\x00z", b"c"):
        store.put(k, k + b"!")
    assert store.get(b"b1") == b"b1!"
    assert [k for k, _ in store.items(b"b")] == [b"b\x00z", b"b1", b"b2"]
    assert [k for k, _ in store.items()] == [b"a1", b"b\x00z", b"b1", b"b2", b"c"]
    for k, _ in store.items(b"b"):
        store.delete(k)
    store.delete(b"missing")
    assert [k for k, _ in store.items()] == [b"a1", b"c"]


def test_a_pending_join_in_partition_state_survives_a_restart(tmp_path):
    """A join buffer checkpointed before a restart still completes the join afterwards."""
    msg = pipeline_message({"name": "p", "steps": [{"name": "a"}, {"name": "b"}],
                            "output": {"steps": ["a", "b"]}}, uid="u1")
    v = np.array([1.0], np.float32)
    state = rocks_partition_state(str(tmp_path / "u1"), 0)
    d = PipelineTestDriver(compile_pipeline(msg, store_factory=state.store))
    d.pipe(d.model_outputs("a"), oip.make_response({"A": v}), key="k")
    state.commit()
    state.close()
    state = rocks_partition_state(str(tmp_path / "u1"), 0)
    d = PipelineTestDriver(compile_pipeline(msg, store_factory=state.store))
    d.pipe(d.model_outputs("b"), oip.make_response({"B": v}), key="k")
    [out] = d.read(d.outputs_topic)
    assert [t.name for t in oip.parse_response(out.value).outputs] == ["A", "B"]
    state.close()
