"""Byte encoding of join buffers: one store entry per record key holding that key's buffered records.

Grouping by key keeps a join a single get/put per arrival and makes "all buffered matches of the
other branches" a local scan. The format is private to ``dataflow.joins`` (length-prefixed, little
endian) so any ``StateStore`` backend can hold it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

_FORMAT_VERSION = 1
_ENTRY = struct.Struct("<HqqBH")       # branch, record ts, wall ms, flags, header count
_LEN = struct.Struct("<I")
_NONE = 0xFFFFFFFF
_NO_VALUE = _LEN.pack(_NONE)
_HEAD = struct.Struct("<BI")          # format version, entry count
MATCHED = 1


@dataclass(slots=True)
class Entry:
    """One buffered record of one branch."""

    branch: int
    timestamp: int                 # record time (join windows compare these)
    wall_ms: int                   # wall clock when buffered (wall-clock expiry)
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    matched: bool = False          # took part in an emitted result (outer joins emit no partial for it)


def _get_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    (n,) = _LEN.unpack_from(data, pos)
    pos += 4
    if n == _NONE:
        return None, pos
    end = pos + n
    return data[pos:end], end


def encode_entries(entries: list[Entry]) -> bytes:
    # One join of the pieces: a value is copied once (building a bytearray copies it twice).
    out = [_HEAD.pack(_FORMAT_VERSION, len(entries))]
    append = out.append
    pack_entry, pack_len = _ENTRY.pack, _LEN.pack
    for e in entries:
        headers = e.headers
        append(pack_entry(e.branch, e.timestamp, e.wall_ms, MATCHED if e.matched else 0, len(headers)))
        for k, v in headers:
            name = k.encode("utf-8")
            append(pack_len(len(name)))
            append(name)
            if v is None:
                append(_NO_VALUE)
            else:
                append(pack_len(len(v)))
                append(v)
        value = e.value
        if value is None:
            append(_NO_VALUE)
        else:
            append(pack_len(len(value)))
            append(value)
    return b"".join(out)


def decode_entries(data: bytes) -> list[Entry]:
    if not data or data[0] != _FORMAT_VERSION:
        raise ValueError(f"join buffer entry has unknown format version {data[0] if data else None}")
    data = bytes(data)   # slices of bytes are the copies kept: no memoryview in between
    (count,) = _LEN.unpack_from(data, 1)
    pos = 5
    entries: list[Entry] = []
    unpack_entry, entry_size = _ENTRY.unpack_from, _ENTRY.size
    for _ in range(count):
        branch, ts, wall, flags, nh = unpack_entry(data, pos)
        pos += entry_size
        headers = []
        for _ in range(nh):
            k, pos = _get_bytes(data, pos)
            v, pos = _get_bytes(data, pos)
            headers.append(((k or b"").decode("utf-8"), v or b""))
        value, pos = _get_bytes(data, pos)
        entries.append(Entry(branch, ts, wall, value, headers, bool(flags & MATCHED)))
    return entries


GROUP_PREFIX = b"g\x00"


def group_key(key: str | None) -> bytes:
    return GROUP_PREFIX + (b"\x00" if key is None else b"\x01" + key.encode("utf-8"))


def key_of_group(store_key: bytes) -> str | None:
    rest = store_key[len(GROUP_PREFIX):]
    return None if rest[:1] == b"\x00" else rest[1:].decode("utf-8")
