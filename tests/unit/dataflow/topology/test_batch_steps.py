"""Batching on steps feeding model inputs through the in-memory driver."""
from __future__ import annotations

import numpy as np
import pytest

from dataflow import oip
from dataflow.topology import TopologyError, build_topology
from dataflow.topology.builders import create_message, step_update
from dataflow_testing.driver import PipelineTestDriver
from scheduler_min.convert import pipeline_message

NS = "seldon.default"


def row(i):
    return oip.make_request({"INPUT": np.array([[i, i]], np.float32)}, id=f"r{i}")


def batched(size=None, window=None):
    batch = {k: v for k, v in (("size", size), ("windowMs", window)) if v}
    return PipelineTestDriver(pipeline_message({"name": "p", "steps": [{"name": "m", "batch": batch}]}))


def test_batch_size_three_merges_rows_and_uses_the_completing_record():
    d = batched(size=3)
    for i in range(2):
        d.pipe(d.inputs_topic, row(i), key=f"k{i}", timestamp=10 + i)
    assert d.read(d.model_inputs("m")) == []
    d.pipe(d.inputs_topic, row(2), key="k2", timestamp=5)
    [out] = d.read(d.model_inputs("m"))
    assert out.key == "k2"
    req = oip.parse_request(out.value)
    assert req.id == "r2"
    np.testing.assert_allclose(oip.request_arrays(req)["INPUT"], [[0, 0], [1, 1], [2, 2]])
    assert out.headers[-2:] == [("pipeline", b"p"), ("x-pipeline-version", b"1")]


def test_batch_window_flushes_partial_batch_on_wall_clock():
    d = batched(size=10, window=200)
    d.pipe(d.inputs_topic, row(0), key="a")
    d.pipe(d.inputs_topic, row(1), key="b")
    d.advance(199)
    assert d.read(d.model_inputs("m")) == []
    d.advance(1)
    [out] = d.read(d.model_inputs("m"))
    assert oip.request_arrays(oip.parse_request(out.value))["INPUT"].shape == (2, 2)


def test_bad_batch_input_is_an_error_record_not_fatal():
    d = batched(size=2)
    d.pipe(d.inputs_topic, row(0), key="a")
    d.pipe(d.inputs_topic, oip.make_request({"INPUT": np.array([1, 2, 3], np.int64)}), key="bad")
    d.pipe(d.inputs_topic, row(1), key="b")
    assert [r.key for r in d.read(d.model_inputs("m"))] == ["b"]
    assert d.stats().malformed == 1
    assert [r.key for r in d.read(d.errors_topic)] == ["bad"]


def test_rolling_without_size_is_rejected():
    msg = create_message("p", [step_update(f"{NS}.model.m.inputs", [(f"{NS}.pipeline.p.inputs", "p")],
                                           pipeline="p", batch_window_ms=5, batch_rolling=True)])
    with pytest.raises(TopologyError, match=r"rolling needs batch\.size"):
        build_topology(msg)
