"""Examples for dataflow.batching.Batcher: size (as the reference), window, rolling, restarts, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc.service_pb2 import ModelInferRequest

from dataflow import oip
from dataflow.batching import Batcher
from dataflow.oip import CodecError
from dataflow.records import Record
from dataflow.state import MemoryStore


def rec(values, *, rid="r", partition=0, ts=0, key=None, raw=False, name="x", dtype=np.int32):
    arr = np.asarray(values, dtype=dtype).reshape(len(values), -1) if len(values) else np.zeros((0, 1), dtype)
    req = oip.make_request({name: arr}, id=rid, raw=raw)
    return Record(topic="t", key=key or f"{partition}.p.{rid}", value=req.SerializeToString(),
                  headers=[("x-request-id", rid.encode())], timestamp=ts, partition=partition)


def rows(record: Record) -> list:
    return oip.request_arrays(oip.parse_request(record.value))["x"].reshape(-1).tolist()


def test_size_emits_when_first_input_reaches_size_with_completing_record_metadata():
    b = Batcher(MemoryStore(), size=3, window_ms=None)
    assert b.add(rec([1], rid="a", ts=50), 0) == []
    assert b.add(rec([2], rid="b", ts=70), 1) == []
    [out] = b.add(rec([3], rid="c", ts=60), 2)
    assert rows(out) == [1, 2, 3]
    assert out.key == "0.p.c" and out.headers == [("x-request-id", b"c")]
    assert out.timestamp == 70
    merged = oip.parse_request(out.value)
    assert merged.id == "c" and list(merged.inputs[0].shape) == [3, 1]
    assert b.pending_partitions() == [] and len(b.store) == 0


def test_size_overshoot_is_not_split():
    b = Batcher(MemoryStore(), size=3, window_ms=None)
    assert b.add(rec([1, 2]), 0) == []
    [out] = b.add(rec([3, 4]), 0)
    assert rows(out) == [1, 2, 3, 4]
    [big] = b.add(rec([5, 6, 7, 8]), 0)
    assert rows(big) == [5, 6, 7, 8]


def test_partitions_batch_independently():
    b = Batcher(MemoryStore(), size=2, window_ms=None)
    assert b.add(rec([1], partition=0), 0) == []
    assert b.add(rec([10], partition=1), 0) == []
    [out] = b.add(rec([2], partition=0), 0)
    assert rows(out) == [1, 2] and out.partition == 0
    assert b.pending_partitions() == [1]


def test_window_flushes_partial_batch_keyed_by_last_record():
    b = Batcher(MemoryStore(), size=None, window_ms=100)
    assert b.next_deadline() is None
    b.add(rec([1], rid="a", ts=5), 1000)
    b.add(rec([2], rid="b", ts=3), 1050)
    assert b.next_deadline() == 1100
    assert b.punctuate(1099) == []
    [out] = b.punctuate(1100)
    assert rows(out) == [1, 2] and out.key == "0.p.b" and out.timestamp == 5
    assert b.next_deadline() is None and b.punctuate(5000) == []


def test_size_and_window_whichever_first():
    b = Batcher(MemoryStore(), size=2, window_ms=100)
    b.add(rec([1]), 0)
    [by_size] = b.add(rec([2]), 10)
    assert rows(by_size) == [1, 2]
    b.add(rec([3]), 20)
    assert b.next_deadline() == 120
    [by_time] = b.punctuate(500)
    assert rows(by_time) == [3]


def test_without_window_punctuate_never_emits():
    b = Batcher(MemoryStore(), size=5, window_ms=None)
    b.add(rec([1]), 0)
    assert b.punctuate(10**12) == [] and b.next_deadline() is None
    [out] = b.drain()
    assert rows(out) == [1]


def test_pending_batch_survives_restart_on_same_store():
    store = MemoryStore()
    b = Batcher(store, size=3, window_ms=1000)
    b.add(rec([1], partition=2), 100)
    b.add(rec([2], partition=2), 150)
    restarted = Batcher(store, size=3, window_ms=1000)
    assert restarted.pending_partitions() == [2]
    assert restarted.next_deadline() == 1100
    assert oip.request_arrays(restarted.pending_batch(2))["x"].reshape(-1).tolist() == [1, 2]
    [out] = restarted.add(rec([3], partition=2), 200)
    assert rows(out) == [1, 2, 3] and len(store) == 0


def test_two_batchers_can_share_a_store():
    store = MemoryStore()
    a, b = Batcher(store, size=2, window_ms=None, name="a"), Batcher(store, size=2, window_ms=None, name="b")
    a.add(rec([1]), 0)
    b.add(rec([9]), 0)
    [out] = a.add(rec([2]), 0)
    assert rows(out) == [1, 2]
    assert Batcher(store, size=2, window_ms=None, name="b").pending_partitions() == [0]


def test_raw_requests_batch_to_raw():
    b = Batcher(MemoryStore(), size=2, window_ms=None)
    b.add(rec([1], raw=True), 0)
    [out] = b.add(rec([2]), 0)
    merged = oip.parse_request(out.value)
    assert len(merged.raw_input_contents) == 1
    assert rows(out) == [1, 2]


def test_schema_prefixed_values_are_accepted():
    b = Batcher(MemoryStore(), size=2, window_ms=None)
    r = rec([1])
    b.add(r.evolve(value=b"\x00\x00\x00\x00\x01\x00" + r.value), 0)
    [out] = b.add(rec([2]), 0)
    assert rows(out) == [1, 2]


@pytest.mark.parametrize("bad", [
    Record(topic="t", key="k", value=b"\xff\xff"),
    Record(topic="t", key="k", value=None),
    rec([1.5], dtype=np.float32),
    Record(topic="t", key="k", value=oip.make_request({"x": np.zeros((1, 3), np.int32)}).SerializeToString()),
])
def test_bad_record_raises_and_loses_nothing(bad):
    store = MemoryStore()
    b = Batcher(store, size=3, window_ms=None)
    b.add(rec([1]), 0)
    before = dict(store._data)
    with pytest.raises(CodecError):
        b.add(bad, 0)
    assert dict(store._data) == before
    b.add(rec([2]), 0)
    [out] = b.add(rec([3]), 0)
    assert rows(out) == [1, 2, 3]


def test_scalar_tensor_is_rejected():
    req = ModelInferRequest()
    req.inputs.add(name="s", datatype="INT32").contents.int_contents.append(1)
    with pytest.raises(CodecError, match="no dimensions"):
        Batcher(MemoryStore(), size=2, window_ms=None).add(Record("t", "k", req.SerializeToString()), 0)


def test_rolling_emits_sliding_window_for_every_request_after_the_first_size_minus_one():
    b = Batcher(MemoryStore(), size=3, window_ms=None, rolling=True)
    outs = [b.add(rec([i], rid=str(i)), i) for i in range(1, 6)]
    assert outs[0] == [] and outs[1] == []
    assert [rows(o[0]) for o in outs[2:]] == [[1, 2, 3], [2, 3, 4], [3, 4, 5]]
    assert [o[0].key for o in outs[2:]] == ["0.p.3", "0.p.4", "0.p.5"]
    assert len(b.store) == 1 + 3  # meta + the window


def test_rolling_with_window_answers_unfilled_windows_and_clears_filled_ones():
    b = Batcher(MemoryStore(), size=3, window_ms=100, rolling=True)
    b.add(rec([1]), 0)
    b.add(rec([2]), 10)
    [partial] = b.punctuate(100)
    assert rows(partial) == [1, 2] and b.pending_partitions() == []
    for i, t in ((3, 200), (4, 210), (5, 220)):
        last = b.add(rec([i]), t)
    assert rows(last[0]) == [3, 4, 5]
    assert b.punctuate(300) == [] and b.pending_partitions() == []


def test_constructor_rejects_nonsense():
    with pytest.raises(ValueError):
        Batcher(MemoryStore(), size=None, window_ms=None)
    with pytest.raises(ValueError):
        Batcher(MemoryStore(), size=0, window_ms=0)
    with pytest.raises(ValueError):
        Batcher(MemoryStore(), size=None, window_ms=10, rolling=True)
    with pytest.raises(ValueError):
        Batcher(MemoryStore(), size=-1, window_ms=None)
