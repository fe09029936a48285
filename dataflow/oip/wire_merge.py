"""Join merges from record bytes to record bytes, reusing the merged metadata of earlier records.

Why: merging the branches of a join the message way parses every branch value, copies its tensors
and raw contents into a new message and serialises that: for two 1 KB branches most of a join
step's time besides the join itself. As in ``dataflow.oip.wire``, the values of one join mostly
differ only in their id and their raw tensor contents, so each value is split at the protobuf wire
level into its id field, its raw contents entries and everything else (its *skeleton*: tensor
names, datatypes, shapes, parameters, typed contents). The skeletons of a combination of branches
are merged once by the message merge (``dataflow.oip.convert.join_values``) and the result is
remembered; a merge is then the first branch's id field, the merged skeleton and every branch's
raw entries in branch order, joined as bytes. These are the bytes the message merge serialises:
its fields in field-number order (id 3, parameters 4, tensors 5, raw contents 6 or 7), the id and
parameters those of the first branch, the tensors and raw entries of every branch in order.

Declined (None: the caller merges the message way, which also raises the usual ``CodecError``):
fewer than two values (the message merge then keeps the one value whole), a missing branch, a
value the splitter does not handle (schema-registry framing, a field that is not
length-delimited, a multi-byte tag, a length varint that is truncated or not minimal, a repeated
id, an id that is not UTF-8, a field after the raw entries), branches of which some carry raw
contents and others not (the message merge converts the typed contents to raw then), and
skeletons the message parser refuses. Joins whose skeletons keep changing (typed contents) turn
the reuse off for a while, so they pay little extra.
"""
from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError
from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow.oip.convert import join_values
from dataflow.oip.datatypes import CodecError
from dataflow.oip.tensors import parts
from dataflow.oip.wire import _ID_TAG, _LEN, _long_length, _utf8

_RAW_TAG = {ModelInferRequest: (7 << 3) | _LEN, ModelInferResponse: (6 << 3) | _LEN}
MAX_CACHED = 64              # merged skeletons remembered per join (then forgotten all at once)
MAX_SKELETON_BYTES = 4096    # larger skeletons carry typed contents: not worth remembering
MISS_SLACK = 64              # misses beyond the hits that turn the reuse off ...
OFF_FOR = 65_536             # ... for this many merges

# A split value: (id field or b"", skeleton, offset of its first raw entry, number of raw entries)
Split = tuple[bytes, bytes, int, int]
# (skeleton per branch, raw entries per branch, merged skeleton)
Layout = tuple[tuple[bytes, ...], tuple[int, ...], bytes]


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """The length varint at ``pos``: (length, position after it). IndexError past the end;
    ValueError when it is not minimal (the message path would write fewer bytes) or too long."""
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    length, pos = _long_length(data, pos + 1, b)
    if data[pos - 1] == 0:
        raise ValueError("length varint not minimal")
    return length, pos


def split(data: object, raw_tag: int) -> Split | None:
    """A value as [id field][skeleton][raw entries], or None when it is not laid out so."""
    if type(data) is not bytes:
        return None
    n = len(data)
    pos = 0
    id_start = id_end = -1
    raw_start = -1
    n_raw = 0
    try:   # reading past the end (a truncated value) raises IndexError
        while pos < n:
            start = pos
            tag = data[pos]
            if tag >= 0x80 or tag & 7 != _LEN:
                return None
            length, pos = _length(data, pos + 1)
            end = pos + length
            if end > n:
                return None
            if tag == raw_tag:
                if raw_start < 0:
                    raw_start = start
                n_raw += 1
            elif raw_start >= 0 or (tag == _ID_TAG and id_start >= 0):
                return None   # a field after the raw entries, or a second id
            elif tag == _ID_TAG:
                ident = data[pos:end]
                if not (ident.isascii() or _utf8(ident)):
                    return None
                id_start, id_end = start, end
                id_empty = end == pos
            pos = end
    except (IndexError, ValueError):
        return None
    if raw_start < 0:
        raw_start = n
    if id_start < 0:
        return b"", data[:raw_start], raw_start, n_raw
    skeleton = data[:id_start] + data[id_end:raw_start] if id_start else data[id_end:raw_start]
    return (b"" if id_empty else data[id_start:id_end]), skeleton, raw_start, n_raw


class WireMerge:
    """One join's merge, bytes to bytes: ``merge(values) -> bytes`` or None when the values must
    be merged the message way."""

    def __init__(self, message: type[ModelInferRequest] | type[ModelInferResponse]):
        self._message = message
        self._raw_tag = _RAW_TAG[message]
        self._cache: dict[tuple[tuple[bytes, int], ...], bytes | None] = {}
        self._hits = self._misses = 0
        self._off = 0   # merges left to do the message way
        # The last merge's layout, when every value was [id][skeleton][raw entries] (the usual
        # one): values laid out the same way are merged without scanning their fields.
        self._layout: Layout | None = None
        # The same for the usual 2-way join of values with one raw entry each: (skeleton of each
        # branch, merged skeleton), merged by ``_same_pair`` without a loop over the branches.
        self._pair: tuple[bytes, bytes, bytes] | None = None

    def __call__(self, values: Sequence[bytes | None]) -> bytes | None:
        if self._off:
            self._off -= 1
            return None
        if len(values) < 2:
            return None
        layout = self._layout
        if layout is not None and len(values) == len(layout[0]):
            pair = self._pair
            done = self._same_pair(values, pair) if pair is not None else self._same_layout(values, layout)
            if done is not None:
                return done
        raw_tag = self._raw_tag
        splits: list[Split] = []
        for v in values:
            s = split(v, raw_tag)
            if s is None:
                return None
            splits.append(s)
        key = tuple((s[1], s[3]) for s in splits)
        if key in self._cache:
            merged = self._cache[key]
            self._hits += 1
        else:
            merged = self._learn(key)
        if merged is None:
            return None
        if all(s[0] and s[2] == len(s[0]) + len(s[1]) for s in splits):
            self._layout = (tuple(s[1] for s in splits), tuple(s[3] for s in splits), merged)
            self._pair = ((splits[0][1], splits[1][1], merged)
                          if len(splits) == 2 and splits[0][3] == splits[1][3] == 1 else None)
        out = [splits[0][0], merged]
        for v, s in zip(values, splits, strict=True):
            if s[3]:
                out.append(v[s[2]:])  # type: ignore[index]  # split() took only bytes
        return b"".join(out)

    def _same_layout(self, values: Sequence[bytes | None], layout: Layout) -> bytes | None:
        """The merge of values laid out as the remembered ones: each [id][skeleton][raw entries]
        with a one-byte id length and the same skeleton as that branch's remembered value. None:
        they are split the usual way."""
        skeletons, counts, merged = layout
        raw_tag = self._raw_tag
        out = [b"", merged]
        try:
            for i, (v, skeleton, count) in enumerate(zip(values, skeletons, counts, strict=True)):
                if type(v) is not bytes or v[0] != _ID_TAG:
                    return None
                id_end = v[1] + 2
                if id_end == 2 or id_end >= 0x82:
                    return None
                ident = v[2:id_end]
                if not ident.isascii():
                    try:
                        ident.decode("utf-8")
                    except UnicodeDecodeError:
                        return None
                if not v.startswith(skeleton, id_end):
                    return None
                raw_start = pos = id_end + len(skeleton)
                n = len(v)
                while pos < n:
                    if v[pos] != raw_tag:
                        return None
                    length, pos = _length(v, pos + 1)
                    pos += length
                    count -= 1
                if pos != n or count:
                    return None
                if not i:
                    out[0] = v[:id_end]
                if raw_start < n:
                    out.append(v[raw_start:])
        except (IndexError, ValueError):
            return None
        self._hits += 1
        return b"".join(out)

    def _same_pair(self, values: Sequence[bytes | None], pair: tuple[bytes, bytes, bytes]) -> bytes | None:
        """``_same_layout`` for two values with one raw entry each."""
        first, second = values
        a = self._single_raw(first, pair[0])
        if a is None:
            return None
        b = self._single_raw(second, pair[1])
        if b is None:
            return None
        self._hits += 1
        return b"".join((first[:a[0]], pair[2], first[a[1]:], second[b[1]:]))  # type: ignore[index]

    def _single_raw(self, v: bytes | None, skeleton: bytes) -> tuple[int, int] | None:
        """(end of the id field, start of the raw entry) of a value laid out as
        [id with a one-byte length][skeleton][one raw entry], else None."""
        try:
            if type(v) is not bytes or v[0] != _ID_TAG:
                return None
            id_end = v[1] + 2
            if id_end == 2 or id_end >= 0x82 or not v.startswith(skeleton, id_end):
                return None
            ident = v[2:id_end]
            if not (ident.isascii() or _utf8(ident)):
                return None
            raw_start = id_end + len(skeleton)
            if v[raw_start] != self._raw_tag:
                return None
            length = v[raw_start + 1]
            pos = raw_start + 2
            if length >= 0x80:
                second = v[pos]
                if 0 < second < 0x80:   # a minimal two-byte length (entries of 128 B to 16 KB)
                    length = (length & 0x7F) | (second << 7)
                    pos += 1
                else:
                    length, pos = _length(v, pos - 1)
        except (IndexError, ValueError):
            return None
        if pos + length != len(v):
            return None
        return id_end, raw_start

    def _learn(self, key: tuple[tuple[bytes, int], ...]) -> bytes | None:
        """The merged skeleton of these branch skeletons (None: this combination is declined)."""
        self._misses += 1
        if self._misses > self._hits + MISS_SLACK:
            self._hits = self._misses = 0
            self._off = OFF_FOR
            return None
        if sum(len(skeleton) for skeleton, _ in key) > MAX_SKELETON_BYTES:
            return None
        merged = self._merge_skeletons(key)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key] = merged
        return merged

    def _merge_skeletons(self, key: tuple[tuple[bytes, int], ...]) -> bytes | None:
        if len({n_raw > 0 for _, n_raw in key}) > 1:
            return None   # some branches raw, some typed: the message merge converts
        out = None
        stand_ins: list[bytes] = []
        for b, (skeleton, n_raw) in enumerate(key):
            try:
                msg = self._message.FromString(skeleton)
            except (DecodeError, RuntimeError, TypeError, ValueError):
                return None
            names = [b"%d:%d" % (b, i) for i in range(n_raw)]
            parts(msg)[1].extend(names)
            stand_ins.extend(names)
            try:
                out = join_values(out, msg)
            except CodecError:
                return None
        if out is None:
            return None
        raw = parts(out)[1]
        if list(raw) != stand_ins or out.id:
            return None
        del raw[:]
        merged: bytes = out.SerializeToString()
        return merged
