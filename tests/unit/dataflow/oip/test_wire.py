"""The bytes-to-bytes step converter gives exactly the bytes of parse -> convert -> serialise, or
declines (None) and leaves the value to the message path."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow import oip
from dataflow.oip import wire
from dataflow.oip.wire import WireConverter

CASES = [  # (source, target, converter)
    (ModelInferResponse, ModelInferRequest, oip.convert_to_request),
    (ModelInferRequest, ModelInferRequest, oip.filter_request),
    (ModelInferResponse, ModelInferResponse, oip.filter_response),
    (ModelInferRequest, ModelInferResponse, oip.convert_to_response),
]
SELECTIONS = [(None, None), (None, {"a": "x"}), ({"a"}, None), ({"b", "c"}, {"c": "z", "b": "y"}), ({"nope"}, None)]


def message_path(cls, convert, value, tensors, renames) -> bytes:
    parse = oip.parse_request if cls is ModelInferRequest else oip.parse_response
    return convert(parse(value), tensors, renames).SerializeToString()


def random_message(cls, rng: random.Random):
    names = rng.sample(["a", "b", "c", "d"], rng.randint(0, 3))
    arrays = {n: np.arange(rng.randint(1, 4) * 2, dtype=rng.choice([np.float32, np.int64])).reshape(-1, 2) + i
              for i, n in enumerate(names)}
    make = oip.make_request if cls is ModelInferRequest else oip.make_response
    params = rng.choice([None, {"p": 1}, {"p": "s", "q": True}])
    tensor_params = {n: {"content_type": "np"} for n in names if rng.random() < 0.3}
    msg = make(arrays, id=rng.choice(["", "r1", "é", "x" * 200]), raw=rng.random() < 0.7, parameters=params,
               tensor_parameters=tensor_params)
    if cls is ModelInferResponse and rng.random() < 0.5:
        msg.model_name, msg.model_version = "m", "3"
    if cls is ModelInferRequest and rng.random() < 0.3:
        msg.outputs.add(name="o")
    raw = msg.raw_input_contents if cls is ModelInferRequest else msg.raw_output_contents
    if len(raw) and rng.random() < 0.2:   # more, or fewer, raw entries than tensors
        raw.append(b"\x01\x02") if rng.random() < 0.5 else raw.pop()
    return msg


def reordered(value: bytes, rng: random.Random) -> bytes:
    """The same message with its top-level fields in another order (protobuf allows any)."""
    fields, pos = [], 0
    while pos < len(value):
        start, pos = pos, pos + 1
        length, shift = 0, 0
        while True:
            b = value[pos]
            pos += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        fields.append(value[start:pos + length])
        pos += length
    rng.shuffle(fields)
    return b"".join(fields)


@pytest.mark.parametrize("source,target,convert", CASES)
def test_same_bytes_as_the_message_path(source, target, convert):
    rng = random.Random(7)
    converters = {i: WireConverter(source, target, convert, *selection) for i, selection in enumerate(SELECTIONS)}
    converted = 0
    for _ in range(300):
        i = rng.randrange(len(SELECTIONS))
        tensors, renames = SELECTIONS[i]
        value = random_message(source, rng).SerializeToString()
        if rng.random() < 0.2:
            value = reordered(value, rng)
        if rng.random() < 0.1:
            value = b"\x00\x00\x00\x00\x01\x00" + value   # schema-registry framing
        expected = message_path(source, convert, value, tensors, renames)
        for _ in range(2):  # learning the skeleton (or reusing an earlier one), then reusing it
            got = converters[i](value)
            assert got is not None
            assert got[0] == expected
            assert got[1] == len(oip.parse_request(expected).inputs if target is ModelInferRequest
                                 else oip.parse_response(expected).outputs)
        converted += 1
    assert converted == 300


@pytest.mark.parametrize("model_name", ["", "m"])
def test_reuses_a_skeleton_across_ids_and_contents(model_name):
    convert = WireConverter(ModelInferResponse, ModelInferRequest, oip.convert_to_request, None, {"OUTPUT0": "IN"})
    for i in range(50):
        value = oip.make_response({"OUTPUT0": np.full((1, 4), i, dtype=np.float32)}, raw=True,
                                  id=["r", "é", "x" * 130, "", "rr"][i % 5] + str(i),
                                  model_name=model_name).SerializeToString()
        if i == 30:
            value = value[:-1]   # a truncated record is left to the message path
            assert convert(value) is None
            continue
        got = convert(value)
        assert got is not None
        assert got[0] == message_path(ModelInferResponse, oip.convert_to_request, value, None, {"OUTPUT0": "IN"})
    assert len(convert._cache) == 1
    assert convert._layout is not None and convert._layout[0] == (b"\x0a\x01m" if model_name else b"")


@pytest.mark.parametrize("value", [
    None, "text", b"\x08\x01",                    # not bytes; a varint field (no such top-level field)
    b"\x1a\x05ab",                                 # truncated
    b"\x1a\x02\xff\xfe",                           # an id that is not UTF-8
    b"\x2a\x03\x0a\x01\xff",                       # a tensor name that is not UTF-8
    b"\xfa\x01\x00",                               # a two-byte tag
])
def test_declines_what_it_does_not_handle(value):
    convert = WireConverter(ModelInferResponse, ModelInferRequest, oip.convert_to_request, None, None)
    assert convert(value) is None


def test_turns_itself_off_when_skeletons_keep_changing(monkeypatch):
    monkeypatch.setattr(wire, "OFF_FOR", 10)
    convert = WireConverter(ModelInferResponse, ModelInferRequest, oip.convert_to_request, None, None)
    values = [oip.make_response({"a": np.full((1, 2), i, dtype=np.int64)}, id="r").SerializeToString()
              for i in range(wire.MISS_SLACK + 20)]
    results = [convert(v) for v in values]
    assert all(r is not None for r in results[:wire.MISS_SLACK])
    assert results[wire.MISS_SLACK] is None   # typed contents differ every time: the message path is as fast
    assert all(r is None for r in results[wire.MISS_SLACK:wire.MISS_SLACK + 10])
    assert results[wire.MISS_SLACK + 11] is not None


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), case=st.sampled_from(CASES), selection=st.sampled_from(SELECTIONS),
       reorder=st.booleans(), framed=st.booleans())
def test_property_same_bytes_or_declined(seed, case, selection, reorder, framed):
    """Any message, selection and field order: the converter gives the message path's bytes, for a
    fresh skeleton and for a reused one."""
    source, target, convert = case
    rng = random.Random(seed)
    value = random_message(source, rng).SerializeToString()
    if reorder:
        value = reordered(value, rng)
    if framed:
        value = b"\x00\x00\x00\x00\x01\x00" + value
    expected = message_path(source, convert, value, *selection)
    converter = WireConverter(source, target, convert, *selection)
    for _ in range(2):
        got = converter(value)
        if got is not None:
            assert got[0] == expected


@pytest.mark.parametrize("case", CASES)
def test_one_raw_entry_shortcut_same_bytes(case):
    """Records laid out as the last one with a single kept raw entry take the shortcut that copies
    the record's tail as it is: still the message path's bytes, whatever the id and the entry's
    length, and a record that only looks like it (a second raw entry, a field after the entry, a
    truncated entry) is scanned or declined, never copied wrongly."""
    source, target, convert = case
    converter = WireConverter(source, target, convert, None, {"OUTPUT0": "X"})
    make = oip.make_request if source is ModelInferRequest else oip.make_response
    raw_field = 7 if source is ModelInferRequest else 6

    def value(ident: str, size: int) -> bytes:
        return make({"OUTPUT0": np.arange(size, dtype=np.int8).reshape(1, -1)}, raw=True, id=ident).SerializeToString()

    def entry(size: int) -> bytes:   # a raw entry of ``size`` bytes (contents are not checked against shapes)
        length, n = b"", size
        while n >= 0x80:
            length, n = length + bytes([n & 0x7F | 0x80]), n >> 7
        return bytes([(raw_field << 3) | 2]) + length + bytes([n]) + bytes(size)

    first = value("r0", 4)
    assert converter(first)[0] == message_path(source, convert, first, None, {"OUTPUT0": "X"})
    assert converter._single is not None
    body = first[:-6]   # without its raw entry (tag, length 4, 4 bytes)
    assert first[-6:-4] == entry(4)[:2]
    took = 0
    for v in [value("r1", 4), value("é", 4), value("x" * 127, 4), body + entry(127), body + entry(128),
              body + entry(20000)]:   # ids and entry lengths around one length byte
        took += converter._same_single(v, converter._single) is not None
        assert converter(v)[0] == message_path(source, convert, v, None, {"OUTPUT0": "X"})
    assert took == 6
    odd = [
        value("x" * 128, 4),                                                       # a two-byte id length
        first + bytes([(raw_field << 3) | 2, 1, 9]),                               # a second raw entry
        first + b"\x1a\x02r9",                                                     # an id after the entry
        first[:-1],                                                                # truncated
        value("", 4),                                                              # no id
    ]
    for v in odd:
        got = converter(v)
        try:
            expected = message_path(source, convert, v, None, {"OUTPUT0": "X"})
        except oip.CodecError:
            assert got is None
            continue
        assert got is None or got[0] == expected
        converter(first)   # the shortcut's layout again
