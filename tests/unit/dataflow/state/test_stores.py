"""StateStore backends behave alike: get/put/delete, prefix iteration in key order, persistence."""
from __future__ import annotations

import numpy as np
import pytest

from dataflow import codec
from dataflow.state import MemoryStore, RocksStore, rocks_store_factory
from dataflow.testing import PipelineTestDriver
from dataflow.topology import compile_pipeline
from dataflow.topology.builders import pipeline_message


@pytest.fixture(params=["memory", "rocks"])
def store(request, tmp_path):
    s = MemoryStore("m") if request.param == "memory" else RocksStore(str(tmp_path / "db"), "r")
    yield s
    s.close()


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


def test_rocks_store_persists_across_reopen(tmp_path):
    path = str(tmp_path / "db")
    s = RocksStore(path, "r")
    s.put(b"k", b"v")
    s.flush()
    s.close()
    s = RocksStore(path, "r")
    assert s.get(b"k") == b"v"
    s.close()


def test_rocks_factory_keeps_a_pending_join_across_restart(tmp_path):
    """A join buffer written before a restart still completes the join afterwards."""
    msg = pipeline_message({"name": "p", "steps": [{"name": "a"}, {"name": "b"}],
                            "output": {"steps": ["a", "b"]}}, uid="u1")
    v = np.array([1.0], np.float32)
    first = compile_pipeline(msg, store_factory=rocks_store_factory(str(tmp_path / "u1")))
    d = PipelineTestDriver(first)
    d.pipe(d.model_outputs("a"), codec.make_response({"A": v}), key="k")
    first.close()
    second = compile_pipeline(msg, store_factory=rocks_store_factory(str(tmp_path / "u1")))
    d = PipelineTestDriver(second)
    d.pipe(d.model_outputs("b"), codec.make_response({"B": v}), key="k")
    [out] = d.read(d.outputs_topic)
    assert [t.name for t in codec.parse_response(out.value).outputs] == ["A", "B"]
    second.close()
