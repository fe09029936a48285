"""Direct routes (``Pipeline.direct_routes``): a chain step's record as one call on its fields.

A direct route must be what ``Pipeline.process`` does with the same record: same sink value and
headers, same step statistics. Records it does not handle come back as None, uncounted, for the
general path. Only topics that one chain step alone consumes have one."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflow import oip
from dataflow.headers import ALIBI_DISCARDS, PIPELINE, PIPELINE_VERSION
from dataflow.kafka import TopicNamer
from dataflow.records import Record
from dataflow.state.memory import MemoryStore
from dataflow.topology import compile_pipeline
from dataflow.topology.compiled import direct_routes
from scheduler_min.convert import pipeline_message

NAMER = TopicNamer(prefix="seldon", namespace="default")


def compiled(spec, **kwargs):
    return compile_pipeline(pipeline_message(spec, uid="u", namer=NAMER), store_factory=MemoryStore, **kwargs)


CHAIN = {"name": "p", "steps": [
    {"name": "m1"},
    {"name": "m2", "inputs": ["m1"], "tensorMap": {"m1.outputs.OUTPUT0": "INPUT0"}},
    {"name": "m3", "inputs": ["m2.outputs.OUT"]}]}
M1_OUT = NAMER.model_outputs("m1")


def response(tensors, ident="r"):
    return oip.make_response(tensors, raw=True, id=ident).SerializeToString()


header_names = st.sampled_from([PIPELINE, PIPELINE_VERSION, *ALIBI_DISCARDS, "x-request-id", "traceparent", "other"])
header_values = st.one_of(st.binary(max_size=8), st.just(b"p"), st.none())
tensors = st.dictionaries(st.sampled_from(["OUTPUT0", "OUTPUT1", "OUT"]),
                          st.integers(1, 40).map(lambda n: np.arange(n, dtype=np.float32).reshape(1, n)),
                          max_size=3)
values = st.one_of(
    st.builds(response, tensors, st.text(max_size=6)),
    st.builds(response, tensors, st.text(max_size=6)),
    st.binary(max_size=40),      # mostly malformed: the general path's error record
)
# a record's headers: usually with this pipeline's ``pipeline`` header, as its own records have
record_headers = st.tuples(st.booleans(), st.booleans(),
                           st.lists(st.tuples(header_names, header_values), max_size=4)).map(
    lambda t: [(PIPELINE, b"p"), *t[2]] if t[0] or t[1] else t[2])


@settings(max_examples=300, deadline=None)
@given(records=st.lists(st.tuples(values, record_headers), min_size=1, max_size=6))
def test_a_direct_route_gives_what_process_gives(records):
    """Over a stream (the route remembers layouts, so order matters), each record the route
    handles comes out as ``process`` makes it, and the statistics end up equal."""
    direct_side, general_side = compiled(CHAIN), compiled(CHAIN)
    sink, convert = direct_routes(direct_side)[M1_OUT]
    for value, headers in records:
        done = convert(value, list(headers))
        if done is None:   # the general path, as the runner then takes it
            direct_side.process(Record(M1_OUT, "0.p.r", value, _normalised(headers), 7, 0), 1)
        expected = general_side.process(Record(M1_OUT, "0.p.r", value, _normalised(headers), 7, 0), 1)
        if done is not None:
            [out] = expected
            assert (sink, done[0], done[1]) == (out.topic, out.value, out.headers)
    assert direct_side.stats == general_side.stats


def _normalised(headers):
    from dataflow.headers import normalise
    return normalise(headers)


def test_the_usual_chain_record_takes_the_direct_route():
    pipeline = compiled(CHAIN)
    sink, convert = direct_routes(pipeline)[M1_OUT]
    value = response({"OUTPUT0": np.ones((1, 250), np.float32)})
    headers = [(PIPELINE, b"p"), ("x-request-id", b"abc")]
    assert convert(value, headers) is not None            # first record: layout learned on the way
    done = convert(value, headers)
    assert done is not None and sink == NAMER.model_inputs("m2")
    assert done[1] == [("x-request-id", b"abc"), (PIPELINE, b"p"), (PIPELINE_VERSION, b"1")]
    stats = pipeline.stats
    assert stats.consumed == 2 and stats.produced == 2


def test_records_the_route_leaves_to_the_general_path_are_not_counted():
    pipeline = compiled(CHAIN)
    _, convert = direct_routes(pipeline)[M1_OUT]
    value = response({"OUTPUT0": np.ones((1, 4), np.float32)})
    assert convert(value, [(PIPELINE, b"other")]) is None                     # another pipeline's
    assert convert(value, [(PIPELINE, b"p"), ("x", None)]) is None            # a header without value
    assert convert(b"\xff\xff", [(PIPELINE, b"p")]) is None                   # not a response
    assert convert(response({}), [(PIPELINE, b"p")]) is None                 # no tensors: dropped
    assert pipeline.stats.consumed == 0 and pipeline.stats.produced == 0


def test_only_topics_one_chain_step_alone_consumes_have_a_direct_route():
    pipeline = compiled({"name": "q", "steps": [
        {"name": "a"},
        {"name": "b", "inputs": ["a"]},                                   # a.outputs: b and c -> none
        {"name": "c", "inputs": ["a"]},
        {"name": "j", "inputs": ["b", "c"]},                              # a join
        {"name": "t", "inputs": ["j"], "triggers": ["b"]},                # a trigger
        {"name": "bt", "inputs": ["t"], "batch": {"size": 2}},            # a batch
        {"name": "d", "inputs": ["bt"]}]})                                # a chain step alone
    assert set(direct_routes(pipeline)) == {NAMER.model_outputs("bt"), NAMER.pipeline_inputs("q")}


def test_pipelines_without_direct_routes_have_none():
    class Bare:
        pass

    assert direct_routes(Bare()) == {}  # type: ignore[arg-type]
