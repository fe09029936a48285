"""Consumer group ids byte-identical to the reference engine's for every pipeline version uid."""
from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from dataflow.kafka import dataflow_group_id, hash_if_long


def java_biginteger_hex(digest: bytes) -> str:
    """``new BigInteger(1, digest).toString(16)``, written the long way: base-16 digits of the
    unsigned magnitude, most significant first, no leading zeros ("0" for zero)."""
    value = 0
    for byte in digest:
        value = value * 256 + byte
    digits = []
    while value:
        value, d = divmod(value, 16)
        digits.append("0123456789abcdef"[d])
    return "".join(reversed(digits)) or "0"


@given(st.text(min_size=17, max_size=40))
def test_long_uids_hash_like_the_reference(uid):
    assert hash_if_long(uid) == java_biginteger_hex(hashlib.md5(uid.encode()).digest())


@given(st.text(max_size=16))
def test_short_uids_are_kept(uid):
    assert hash_if_long(uid) == uid


def test_a_digest_with_a_leading_zero_loses_it():
    uid = "ciep298fh5ss73dpd003"             # MD5 0608bca6...: printed from the first non-zero digit
    assert hashlib.md5(uid.encode()).hexdigest().startswith("06")
    assert hash_if_long(uid) == "608bca676ecec80dee0895935ad76ed"
    assert dataflow_group_id(uid, "pre", "ns") == "pre-ns-seldon-dataflow-608bca676ecec80dee0895935ad76ed"
