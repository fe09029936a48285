"""Properties of join steps end to end through the driver (random arrival orders and gaps)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflow import oip
from dataflow_testing.driver import PipelineTestDriver
from scheduler_min.convert import pipeline_message

STEPS = ("a", "b", "c")
V = np.array([1.0], np.float32)
arrivals = st.lists(st.tuples(st.sampled_from(["k1", "k2", "k3", "k4"]), st.sampled_from(STEPS)),
                    unique=True, max_size=12)


def driver(join):
    return PipelineTestDriver(pipeline_message({
        "name": "p", "steps": [{"name": s} for s in STEPS],
        "output": {"steps": list(STEPS), "stepsJoin": join, "joinWindowMs": 1000}}))


def names(record):
    return [t.name for t in oip.parse_response(record.value).outputs]


@settings(max_examples=40, deadline=None)
@given(arrivals, st.lists(st.integers(0, 80), min_size=12, max_size=12))
def test_inner_output_join_one_record_per_complete_key_in_step_order(events, gaps):
    d = driver("inner")
    for (key, step), gap in zip(events, gaps):
        d.advance(gap)
        d.pipe(d.model_outputs(step), oip.make_response({step.upper(): V}), key=key)
    outs = d.read(d.outputs_topic)
    complete = {k for k, _ in events if {s for kk, s in events if kk == k} == set(STEPS)}
    # every arrival lies within 12 * 80 ms < the 1 s window, so every complete key joins, once
    assert sorted(o.key for o in outs) == sorted(complete)
    assert all(names(o) == ["A", "B", "C"] for o in outs)


@settings(max_examples=40, deadline=None)
@given(arrivals)
def test_outer_output_join_exactly_one_record_per_key(events):
    d = driver("outer")
    for key, step in events:
        d.pipe(d.model_outputs(step), oip.make_response({step.upper(): V}), key=key)
    d.advance(1000)
    outs = d.read(d.outputs_topic)
    assert sorted(o.key for o in outs) == sorted({k for k, _ in events})
    for o in outs:
        assert names(o) == [s.upper() for s in STEPS if (o.key, s) in events]
    d.advance(5000)
    assert d.read(d.outputs_topic) == []
