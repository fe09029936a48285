"""The bytes-to-bytes join merge gives exactly the bytes of the message merge (parse every branch,
``join_values`` left to right, serialise), or declines (None) and leaves the values to it."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow import oip
from dataflow.oip import wire_merge
from dataflow.oip.wire import WireConverter
from dataflow.oip.wire_merge import WireMerge
from dataflow.topology.transforms import JoinMerge, merge_joined
from tests.unit.dataflow.oip.test_wire import random_message, reordered


def message_merge(cls, values) -> bytes:
    return merge_joined(values, cls is ModelInferRequest)


def raw_response(i: int, name: str = "OUTPUT0", ident: str = "r") -> bytes:
    return oip.make_response({name: np.full((1, 250), i, dtype=np.float32)}, raw=True,
                             id=f"{ident}{i}").SerializeToString()


@pytest.mark.parametrize("cls", [ModelInferRequest, ModelInferResponse])
def test_same_bytes_as_the_message_merge(cls):
    rng = random.Random(11)
    merge = WireMerge(cls)
    merged = 0
    for _ in range(400):
        values = [random_message(cls, rng).SerializeToString() for _ in range(rng.choice([2, 2, 3]))]
        expected = message_merge(cls, values)
        for _ in range(2):  # learning the merged skeleton (or reusing an earlier one), then reusing it
            got = merge(values)
            if got is not None:
                assert got == expected
                merged += 1
    assert merged > 300   # mixed raw / typed branches and extra raw entries are declined, not more


def test_a_join_of_converted_branches_is_merged_on_bytes_once_learned():
    """The join benchmark's shape: two converted 1 KB responses, ids and contents changing."""
    to_request = WireConverter(ModelInferResponse, ModelInferRequest, oip.convert_to_request, None, None)
    merge = WireMerge(ModelInferRequest)
    for i in range(100):
        a = to_request(raw_response(i, "OUTPUT0", ident=["r", "é", "x" * 130, ""][i % 4]))
        b = to_request(raw_response(-i, "OUTPUT1"))
        assert a is not None and b is not None
        values: list[bytes | None] = [a[0], b[0]]
        got = merge(values)
        assert got is not None
        assert got == message_merge(ModelInferRequest, values)
    assert len(merge._cache) == 1


@pytest.mark.parametrize("values", [
    [None, b""],                                   # a missing branch (outer partial)
    [b"\x00\x00\x00\x00\x01\x00", b""],            # schema-registry framing
    [b"\x08\x01", b""],                            # a varint field (no such top-level field)
    [b"\x1a\x05ab", b""],                          # truncated
    [b"\x1a\x02\xff\xfe", b""],                    # an id that is not UTF-8
    [b"\x1a\x81\x00", b""],                        # a length varint that is not minimal
    [b"\x1a\x01a\x1a\x01b", b""],                  # a repeated id
    [b"\x3a\x01a\x2a\x00", b""],                   # a tensor after the raw entries
    [b"\xfa\x01\x00", b""],                        # a two-byte tag
    [b"\x2a\x03\x0a\x01\xff", b""],                # a tensor name that is not UTF-8 (the parser refuses it)
    [],
    [raw_response(1)],                             # one value: the message merge keeps it whole
])
def test_declines_what_it_does_not_handle(values):
    assert WireMerge(ModelInferRequest)(values) is None


def test_declines_raw_with_typed_branches():
    raw = oip.make_request({"a": np.ones((1, 2), np.float32)}, raw=True).SerializeToString()
    typed = oip.make_request({"b": np.ones((1, 2), np.float32)}, raw=False).SerializeToString()
    merge = WireMerge(ModelInferRequest)
    assert merge([raw, typed]) is None
    assert JoinMerge(True)([raw, typed]) == message_merge(ModelInferRequest, [raw, typed])


def test_turns_itself_off_when_skeletons_keep_changing(monkeypatch):
    monkeypatch.setattr(wire_merge, "OFF_FOR", 10)
    merge = WireMerge(ModelInferRequest)
    values = [[oip.make_request({"a": np.full((1, 2), i, dtype=np.int64)}, id="r").SerializeToString()] * 2
              for i in range(wire_merge.MISS_SLACK + 20)]
    results = [merge(v) for v in values]
    assert all(r is not None for r in results[:wire_merge.MISS_SLACK])
    assert results[wire_merge.MISS_SLACK] is None
    assert all(r is None for r in results[wire_merge.MISS_SLACK:wire_merge.MISS_SLACK + 10])
    assert results[wire_merge.MISS_SLACK + 11] is not None


def test_join_merge_falls_back_to_the_message_merge():
    merge = JoinMerge(False)
    left = raw_response(1)
    assert merge([left, None]) == message_merge(ModelInferResponse, [left, None])
    with pytest.raises(oip.CodecError):
        merge([left, b"\xff"])


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cls=st.sampled_from([ModelInferRequest, ModelInferResponse]),
       branches=st.integers(1, 3), reorder=st.booleans(), framed=st.booleans())
def test_property_same_bytes_or_declined(seed, cls, branches, reorder, framed):
    """Any messages and field orders: the merge gives the message merge's bytes, for a fresh merged
    skeleton and for a reused one."""
    rng = random.Random(seed)
    values: list[bytes | None] = []
    for _ in range(branches):
        value = random_message(cls, rng).SerializeToString()
        if reorder and rng.random() < 0.5:
            value = reordered(value, rng)
        if framed and rng.random() < 0.3:
            value = b"\x00\x00\x00\x00\x01\x00" + value
        values.append(value)
    expected = message_merge(cls, values)
    merge = WireMerge(cls)
    for _ in range(2):
        got = merge(values)
        if got is not None:
            assert got == expected


def _message_merge_or_none(cls, values):
    try:
        return message_merge(cls, values)
    except Exception:   # values the message parser refuses: the wire merge must decline them
        return None


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), edits=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2047),
                                                                st.integers(0, 255)), max_size=3),
       cut=st.integers(0, 40), ident=st.sampled_from(["r", "é", "", "x" * 120]))
def test_property_values_unlike_the_learned_pair_are_merged_right_or_declined(seed, edits, cut, ident):
    """The usual 2-way join (one raw entry per branch) learns its layout on one pair; later pairs
    with changed bytes anywhere (ids, skeletons, raw lengths), cut short or grown give the message
    merge's bytes or are declined."""
    rng = random.Random(seed)
    merge = WireMerge(ModelInferResponse)
    learned = [raw_response(1), raw_response(2, "OUTPUT1")]
    assert merge(learned) == message_merge(ModelInferResponse, learned)
    assert merge._pair is not None   # later pairs take the 2-way path
    values = [bytearray(raw_response(rng.randrange(100), ident=ident)),
              bytearray(raw_response(rng.randrange(100), "OUTPUT1"))]
    for branch, pos, byte in edits:
        v = values[branch]
        v[pos % len(v)] = byte
    if cut:
        v = values[rng.randrange(2)]
        if rng.random() < 0.5:
            del v[len(v) - cut:]
        else:
            v.extend(bytes(cut))
    pair: list[bytes | None] = [bytes(v) for v in values]
    got = merge(pair)
    if got is not None:
        assert got == _message_merge_or_none(ModelInferResponse, pair)
