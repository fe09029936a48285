"""Hypothesis properties of Batcher: rows conserved in order, size bound, window flush, restart-transparency."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflow import oip
from dataflow.batching import Batcher
from dataflow.records import Record
from dataflow.state import MemoryStore

# An operation: ("add", partition, rows, advance_ms) or ("tick", advance_ms) or ("restart",).
ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2), st.integers(0, 3), st.integers(0, 50)),
    st.tuples(st.just("tick"), st.integers(0, 200)),
    st.tuples(st.just("restart")),
), max_size=40)


def _rows(record: Record) -> list[int]:
    return oip.request_arrays(oip.parse_request(record.value))["x"][:, 0].tolist()


def _run(batcher_args, operations):
    """Replay operations; return (emitted records with the 'by' reason, inputs per partition, batcher)."""
    store = MemoryStore()
    batcher = Batcher(store, **batcher_args)
    now, counter = 0, 0
    sent: dict[int, list[list[int]]] = {}
    emitted: list[tuple[str, Record, list[int]]] = []
    for op in operations:
        if op[0] == "add":
            _, partition, n, advance = op
            now += advance
            values = list(range(counter, counter + n))
            counter += n
            req = oip.make_request({"x": np.array(values, np.int64).reshape(n, 1)}, id=str(counter))
            record = Record("t", f"{partition}.p.{counter}", req.SerializeToString(),
                            timestamp=now, partition=partition)
            sent.setdefault(partition, []).append(values)
            emitted += [("add", r, values) for r in batcher.add(record, now)]
        elif op[0] == "tick":
            now += op[1]
            emitted += [("tick", r, []) for r in batcher.punctuate(now)]
        else:
            batcher = Batcher(store, **batcher_args)
    return emitted, sent, batcher, now


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops, st.integers(1, 5), st.one_of(st.none(), st.integers(1, 150)))
def test_batching_conserves_rows_in_order_and_respects_size(operations, size, window_ms):
    emitted, sent, batcher, _ = _run({"size": size, "window_ms": window_ms}, operations)
    for partition, inputs in sent.items():
        got = [v for _, r, _ in emitted if r.partition == partition for v in _rows(r)]
        pending = batcher.pending_batch(partition)
        if pending is not None:
            got += oip.request_arrays(pending)["x"][:, 0].tolist()
        assert got == [v for values in inputs for v in values]
    for reason, record, last_values in emitted:
        n = len(_rows(record))
        if reason == "add":
            assert n >= size and n - len(last_values) < size  # emitted exactly when it reached size
        else:
            assert window_ms is not None and n < size


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops, st.one_of(st.none(), st.integers(1, 5)), st.integers(1, 150))
def test_window_flush_releases_everything(operations, size, window_ms):
    emitted, sent, batcher, now = _run({"size": size, "window_ms": window_ms}, operations)
    deadline = batcher.next_deadline()
    if batcher.pending_partitions():
        assert deadline is not None and deadline <= now + window_ms
        emitted += [("tick", r, []) for r in batcher.punctuate(now + window_ms)]
    assert batcher.pending_partitions() == [] and len(batcher.store) == 0
    assert batcher.next_deadline() is None
    for partition, inputs in sent.items():
        got = [v for _, r, _ in emitted if r.partition == partition for v in _rows(r)]
        assert got == [v for values in inputs for v in values]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.integers(0, 2), max_size=30), st.integers(1, 5))
def test_rolling_one_row_requests_emit_last_size_requests(partitions, size):
    operations = [("add", p, 1, 1) for p in partitions]
    emitted, sent, _, _ = _run({"size": size, "window_ms": None, "rolling": True}, operations)
    for partition, inputs in sent.items():
        flat = [v[0] for v in inputs]
        outs = [_rows(r) for _, r, _ in emitted if r.partition == partition]
        assert outs == [flat[i - size + 1:i + 1] for i in range(size - 1, len(flat))]
