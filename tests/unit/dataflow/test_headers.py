"""Header shapes and the sink rewrite: the per-record fast forms agree with the general ones."""
from __future__ import annotations

from dataflow import headers as hdrs


def test_normalise_keeps_pairs_in_shape_and_coerces_the_rest():
    pair = ("a", b"1")
    out = hdrs.normalise([pair, (b"b", "2"), ["c", None], ("d", bytearray(b"4"))])
    assert out == [("a", b"1"), ("b", b"2"), ("c", b""), ("d", b"4")]
    assert out[0] is pair
    assert all(type(h) is tuple for h in out)
    assert hdrs.normalise({"x": "y"}) == [("x", b"y")]


def test_in_shape():
    assert hdrs.in_shape([]) and hdrs.in_shape([("a", b"1")])
    assert not hdrs.in_shape([["a", b"1"]])
    assert not hdrs.in_shape([(b"a", b"1")])
    assert not hdrs.in_shape([("a", "1")])


def test_rewrite_with_a_trailer_is_rewrite_for_sink():
    headers = [("pipeline", b"p"), ("x-request-id", b"r"), ("x-seldon-alibi-type", b"t"),
               ("x-pipeline-version", b"3"), ("z", b"")]
    expected = [("x-request-id", b"r"), ("z", b""), ("pipeline", b"q"), ("x-pipeline-version", b"7")]
    assert hdrs.rewrite_for_sink(headers, "q", 7) == expected
    trailer = hdrs.sink_trailer("q", 7)
    assert hdrs.rewrite_with(headers, trailer) == expected
    assert hdrs.rewrite_with(None, trailer) == trailer
    assert hdrs.rewrite_with(headers, trailer) is not hdrs.rewrite_with(headers, trailer)
