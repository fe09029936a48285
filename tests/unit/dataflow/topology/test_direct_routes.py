"""Direct routes (``Pipeline.direct_routes``): a record of a chain step or of a join straight to
its sink as one call on the record's fields.

A direct route must be what ``Pipeline.process`` does with the same record: same outputs (topic,
value, headers, timestamp; key and partition are the input's), same stored state, same step
statistics. Records it does not handle come back as None, unbuffered and uncounted, for the
general path. Only topics that one such step alone consumes have one."""
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
record_headers = st.tuples(st.booleans(), st.booleans(), st.booleans(),
                           st.lists(st.tuples(header_names, header_values), max_size=4)).map(
    lambda t: [(PIPELINE, b"p"), *t[3]] if t[0] or t[1] or t[2] else t[3])


@settings(max_examples=300, deadline=None)
@given(records=st.lists(st.tuples(values, record_headers), min_size=1, max_size=6))
def test_a_direct_route_gives_what_process_gives(records):
    """Over a stream (the route remembers layouts, so order matters), each record the route
    handles comes out as ``process`` makes it, and the statistics end up equal."""
    direct_side, general_side = compiled(CHAIN), compiled(CHAIN)
    convert = direct_routes(direct_side)[M1_OUT]
    for value, headers in records:
        assert same_outputs(direct_side, general_side, convert, M1_OUT, b"0.p.r", value, headers, 7, 1) in (None, 1)
    assert direct_side.stats == general_side.stats


def same_outputs(direct_side, general_side, route, topic, key, value, headers, ts, now_ms):
    """Feed one record to both sides (the direct one through ``route``, falling back to ``process``
    as the runner does); check their outputs agree; return how many the route made (None: it
    left the record to the general path)."""
    text_key = key.decode() if key is not None else None
    done = route(key, value, list(headers), ts, 0, now_ms)
    if done is None:
        direct_out = [(r.topic, r.value, r.headers, r.timestamp)
                      for r in direct_side.process(Record(topic, text_key, value, _normalised(headers), ts, 0), now_ms)]
    else:
        direct_out = done
    expected = general_side.process(Record(topic, text_key, value, _normalised(headers), ts, 0), now_ms)
    assert all(r.key == text_key and r.partition == 0 for r in expected)
    assert direct_out == [(r.topic, r.value, r.headers, r.timestamp) for r in expected]
    return None if done is None else len(done)


def _normalised(headers):
    from dataflow.headers import normalise
    return normalise(headers)


def test_the_usual_chain_record_takes_the_direct_route():
    pipeline = compiled(CHAIN)
    convert = direct_routes(pipeline)[M1_OUT]
    value = response({"OUTPUT0": np.ones((1, 250), np.float32)})
    headers = [(PIPELINE, b"p"), ("x-request-id", b"abc")]
    assert convert(b"0.p.r", value, headers, 5, 0, 1) is not None     # first record: layout learned on the way
    [(sink, _, out_headers, ts)] = convert(b"0.p.r", value, headers, 5, 0, 1)
    assert sink == NAMER.model_inputs("m2") and ts == 5
    assert out_headers == [("x-request-id", b"abc"), (PIPELINE, b"p"), (PIPELINE_VERSION, b"1")]
    stats = pipeline.stats
    assert stats.consumed == 2 and stats.produced == 2


def test_records_the_route_leaves_to_the_general_path_are_not_counted():
    pipeline = compiled(CHAIN)
    convert = direct_routes(pipeline)[M1_OUT]
    value = response({"OUTPUT0": np.ones((1, 4), np.float32)})

    def direct(value, headers):
        return convert(b"0.p.r", value, headers, 5, 0, 1)

    assert direct(value, [(PIPELINE, b"other")]) is None                     # another pipeline's
    assert direct(value, [(PIPELINE, b"p"), ("x", None)]) is None            # a header without value
    assert direct(b"\xff\xff", [(PIPELINE, b"p")]) is None                   # not a response
    assert direct(response({}), [(PIPELINE, b"p")]) is None                 # no tensors: dropped
    assert pipeline.stats.consumed == 0 and pipeline.stats.produced == 0


def test_only_topics_one_chain_step_alone_consumes_have_a_direct_route():
    pipeline = compiled({"name": "q", "steps": [
        {"name": "a"},                                                    # q.inputs: a and k -> none
        {"name": "b", "inputs": ["a"]},                                   # a.outputs: b and c -> none
        {"name": "c", "inputs": ["a"]},
        {"name": "j", "inputs": ["b", "c"]},                              # b.outputs: j and t's trigger -> none;
        {"name": "t", "inputs": ["j"], "triggers": ["b"]},                # c.outputs: j alone, a join to its sink
        {"name": "bt", "inputs": ["t"], "batch": {"size": 2}},            # j.outputs: a step with a trigger gate
        {"name": "d", "inputs": ["bt"]},                                  # t.outputs: a batch; bt.outputs: d alone
        {"name": "k", "inputs": ["d", "q.inputs"]}]})                     # d.outputs: k alone, a join
    assert set(direct_routes(pipeline)) == {NAMER.model_outputs(m) for m in ("c", "bt", "d")}


def test_pipelines_without_direct_routes_have_none():
    class Bare:
        pass

    assert direct_routes(Bare()) == {}  # type: ignore[arg-type]


JOIN = {"name": "p", "steps": [{"name": "a"}, {"name": "b"}, {"name": "j", "inputs": ["a", "b"]}]}
JOIN_OUTER = {"name": "p", "steps": [{"name": "a"}, {"name": "b"},
                                     {"name": "j", "inputs": ["a", "b"], "inputsJoinType": "outer"}]}
JOIN_ANY = {"name": "p", "steps": [{"name": "a"}, {"name": "b"},
                                   {"name": "j", "inputs": ["a", "b"], "inputsJoinType": "any"}]}


@settings(max_examples=150, deadline=None)
@given(spec=st.sampled_from([JOIN, JOIN_OUTER, JOIN_ANY]),
       records=st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from([b"0.p.x", b"0.p.y", None]),
                                  values, record_headers, st.integers(0, 5)), min_size=1, max_size=8))
def test_a_join_direct_route_gives_what_process_gives(spec, records):
    """Arrivals on either branch, repeated keys, malformed values, headers of every kind: each
    record gives the same outputs through the route as through ``process``, and afterwards both
    joins hold the same state and statistics (punctuation included)."""
    stores_direct: dict[str, MemoryStore] = {}
    stores_general: dict[str, MemoryStore] = {}
    msg = pipeline_message(spec, uid="u", namer=NAMER)
    direct_side = compile_pipeline(msg, store_factory=lambda n: stores_direct.setdefault(n, MemoryStore(n)))
    general_side = compile_pipeline(msg, store_factory=lambda n: stores_general.setdefault(n, MemoryStore(n)))
    routes = direct_routes(direct_side)
    assert set(routes) == {NAMER.model_outputs("a"), NAMER.model_outputs("b")}
    now = 1000
    for branch, key, value, headers, step in records:
        now += step
        topic = NAMER.model_outputs(branch)
        same_outputs(direct_side, general_side, routes[topic], topic, key, value, headers, now, now)
    for p in (direct_side, general_side):
        p.flush()
    assert {n: dict(s.items()) for n, s in stores_direct.items()} == \
        {n: dict(s.items()) for n, s in stores_general.items()}
    late = now + 10 * 60_000
    assert [(r.topic, r.value, r.headers) for r in direct_side.punctuate(late)] == \
        [(r.topic, r.value, r.headers) for r in general_side.punctuate(late)]
    assert direct_side.stats == general_side.stats


def test_the_usual_join_arrivals_take_the_direct_route():
    pipeline = compiled(JOIN)
    routes = direct_routes(pipeline)
    a, b = NAMER.model_outputs("a"), NAMER.model_outputs("b")
    headers = [(PIPELINE, b"p"), ("x-request-id", b"r")]
    assert routes[a](b"0.p.r", response({"OUTPUT0": np.ones((1, 4), np.float32)}), headers, 5, 0, 1) == []
    [(sink, value, out_headers, ts)] = routes[b](b"0.p.r", response({"OUT": np.ones((1, 2), np.float32)}),
                                                 headers, 7, 0, 2)
    assert sink == NAMER.model_inputs("j") and ts == 7
    assert set(oip.request_arrays(oip.parse_request(value))) == {"OUTPUT0", "OUT"}   # the branches merged
    assert out_headers == [("x-request-id", b"r"), (PIPELINE, b"p"), (PIPELINE_VERSION, b"1")]
    assert pipeline.stats.consumed == 2 and pipeline.stats.produced == 1
