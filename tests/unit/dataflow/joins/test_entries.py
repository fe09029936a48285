"""The join buffer's stored format: the changelog and local databases hold it, so it must not change."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dataflow.joins.entries import Entry, decode_entries, encode_entries

GOLDEN = bytes.fromhex(
    "010200000000000068e5cf8b0100007b68e5cf8b01000001020008000000706970656c696e6501000000700c000000782d7265717565"
    "73742d696403000000616263030000001a0172010005000000000000000600000000000000000000ffffffff")


def test_the_stored_format_is_unchanged():
    entries = [Entry(0, 1_700_000_000_000, 1_700_000_000_123, b"\x1a\x01r",
                     [("pipeline", b"p"), ("x-request-id", b"abc")], matched=True),
               Entry(1, 5, 6, None, [], matched=False)]
    assert encode_entries(entries) == GOLDEN
    assert decode_entries(GOLDEN) == entries


entry = st.builds(Entry, st.integers(0, 65535), st.integers(-2**62, 2**62), st.integers(-2**62, 2**62),
                  st.one_of(st.none(), st.binary(max_size=50)),
                  st.lists(st.tuples(st.text(max_size=5), st.binary(max_size=5)), max_size=3), st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(entry, max_size=5))
def test_round_trip(entries):
    assert decode_entries(encode_entries(entries)) == entries
