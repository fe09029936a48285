"""Step conversions from record bytes to record bytes, reusing the converted metadata of earlier
records.

Why: parsing a message, copying its tensors into a new message under new names and serialising it
cost ~4 us per 1 KB record, most of a chain step's time, while the records of one source mostly
differ only in their id and their raw tensor contents. Here a value is split at the protobuf wire
level into its id, its raw contents entries and everything else (its *skeleton*: model name,
parameters, tensor names, datatypes, shapes, typed contents). A skeleton is converted once by the
message converter (``dataflow.oip.convert``), with numbered stand-ins for the raw entries to learn
which entries it keeps; the output is then the id field, the converted skeleton and the kept raw
entries, joined as bytes. These are the bytes the message converter serialises (fields in
field-number order: id 3, parameters 4, tensors 5, raw contents 6 or 7), and raw contents are
copied once instead of twice.

A value the splitter does not handle (not bytes, a field that is not length-delimited, a
multi-byte tag, truncated, a skeleton the message parser refuses) gives None: the caller converts
it the message way, which also raises the usual ``CodecError`` for undecodable values. Streams
whose skeletons keep changing (typed contents) turn the reuse off, so they pay nothing extra.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from itertools import pairwise
from typing import Any

from google.protobuf.message import DecodeError
from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow.oip.messages import _SCHEMA_PREFIX_LEN
from dataflow.oip.tensors import parts

_LEN = 2                     # the length-delimited wire type: every field of both messages
_ID_TAG = (3 << 3) | _LEN    # ``id`` is field 3 of both messages
_RAW_FIELD = {ModelInferRequest: 7, ModelInferResponse: 6}
MAX_CACHED = 64              # skeletons remembered per source (then forgotten all at once)
MAX_SKELETON_BYTES = 4096    # larger skeletons carry typed contents: not worth remembering
MISS_SLACK = 64              # misses beyond the hits that turn the reuse off ...
OFF_FOR = 65_536             # ... for this many records

# (skeleton, number of raw entries) -> (converted skeleton, indices of the raw entries kept, tensors)
Skeleton = tuple[bytes, tuple[int, ...], int]
Convert = Callable[[Any, Collection[str] | None, Mapping[str, str] | None], Any]


def _long_length(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """A length varint whose first byte ``first`` (high bit set) was read and whose next byte is at
    ``pos``: (length, position after it). IndexError when it runs past the end, ValueError when it
    is longer than a length of these messages can be."""
    length = first & 0x7F
    shift = 7
    while True:
        b = data[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        if b < 0x80:
            return length, pos
        shift += 7
        if shift > 28:
            raise ValueError("length varint too long")


def _utf8(value: bytes) -> bool:
    """Whether the message parser accepts ``value`` as a string field (it refuses non-UTF-8).
    Callers test ``isascii()`` first: the usual id, and cheaper than a call."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class WireConverter:
    """One source's conversion, bytes to bytes: ``converter(value) -> (bytes, tensor count)`` or
    None when the value must be converted the message way."""

    def __init__(self, source: type[ModelInferRequest] | type[ModelInferResponse],
                 target: type[ModelInferRequest] | type[ModelInferResponse], convert: Convert,
                 tensors: Collection[str] | None, renames: Mapping[str, str] | None):
        self._source = source
        self._convert = convert
        self._tensors = tensors
        self._renames = renames
        self._raw_tag = (_RAW_FIELD[source] << 3) | _LEN
        self._out_raw_tag = bytes([(_RAW_FIELD[target] << 3) | _LEN])
        self._cache: dict[tuple[bytes, int], Skeleton] = {}
        self._hits = self._misses = 0
        self._off = 0   # records left to convert the message way
        # The last record's layout, when it was [skeleton head][id][skeleton tail][raw entries]
        # (the usual one): (head, tail, number of raw entries, its conversion). A record with the
        # same head and tail bytes around its id is converted without scanning its fields.
        self._layout: tuple[bytes, bytes, int, Skeleton] | None = None
        # The same layout when it has exactly one raw entry and the conversion keeps it (one
        # tensor renamed or passed on: the usual chain step): (head, tail, converted skeleton,
        # tensor count). Such a record needs no list of entries: the output is the id field, the
        # converted skeleton, the target's raw tag and the rest of the record as it is.
        self._single: tuple[bytes, bytes, bytes, int] | None = None

    def __call__(self, data: object) -> tuple[bytes, int] | None:
        if self._off:
            self._off -= 1
            return None
        if type(data) is not bytes:
            return None
        if self._single is not None:
            done = self._same_single(data, self._single)
            if done is not None:
                return done
        elif self._layout is not None:
            done = self._same_layout(data, self._layout)
            if done is not None:
                return done
        n = len(data)
        pos = _SCHEMA_PREFIX_LEN if n >= _SCHEMA_PREFIX_LEN and data[0] == 0 else 0
        raw_tag = self._raw_tag
        id_span: tuple[int, int, int] | None = None   # (start of the field, of its value, end)
        raws: list[tuple[int, int]] = []   # (start of the length, end) of each raw entry
        pieces: list[bytes] = []           # the skeleton's runs of adjacent fields before the current one
        run_start = run_end = -1           # the current run
        try:   # reading past the end (a truncated value) raises IndexError
            while pos < n:
                start = pos
                tag = data[pos]
                if tag >= 0x80 or tag & 7 != _LEN:
                    return None
                length = data[pos + 1]
                pos += 2
                if length >= 0x80:
                    length, pos = _long_length(data, pos, length)
                end = pos + length
                if end > n:
                    return None
                if tag == raw_tag:
                    raws.append((start + 1, end))
                elif tag == _ID_TAG:
                    id_span = (start, pos, end) if end > pos else None    # the last one wins; "" is not sent
                elif start == run_end:
                    run_end = end
                else:
                    if run_end >= 0:
                        pieces.append(data[run_start:run_end])
                    run_start, run_end = start, end
                pos = end
        except (IndexError, ValueError):
            return None
        skeleton = data[run_start:run_end] if run_end >= 0 else b""
        if pieces:
            pieces.append(skeleton)
            skeleton = b"".join(pieces)
        key = (skeleton, len(raws))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._learn(key)
            if hit is None:
                return None
        else:
            self._hits += 1
        if id_span is not None and (not raws or raws[0][0] - 1 >= id_span[2]):
            self._remember(data, id_span, raws, skeleton, hit)
        if id_span is None:
            return self._output(data, b"", hit, raws)
        ident = data[id_span[1]:id_span[2]]
        if not (ident.isascii() or _utf8(ident)):
            return None
        return self._output(data, data[id_span[0]:id_span[2]], hit, raws)

    def _output(self, data: bytes, id_field: bytes, hit: Skeleton,
                raws: list[tuple[int, int]]) -> tuple[bytes, int]:
        """The converted record: the id field, the converted skeleton, the kept raw entries."""
        converted, kept, count = hit
        out = [id_field, converted]
        out_tag = self._out_raw_tag
        for i in kept:
            start, end = raws[i]
            out.append(out_tag)
            out.append(data[start:end])
        return b"".join(out), count

    def _remember(self, data: bytes, id_span: tuple[int, int, int], raws: list[tuple[int, int]],
                  skeleton: bytes, hit: Skeleton) -> None:
        """Keep this record's layout if it is [head][id][tail][raw entries] without framing."""
        start, value, end = id_span
        tail_end = raws[0][0] - 1 if raws else len(data)
        if value - start != 2 or data[0] == 0:   # a one-byte id length; no schema framing
            return
        head, tail = data[:start], data[end:tail_end]
        if head + tail != skeleton:   # skeleton fields elsewhere (e.g. between raw entries)
            return
        for (_, end), (start, _) in pairwise(raws):
            if start - 1 != end:
                return
        self._layout = (head, tail, len(raws), hit)
        converted, kept, count = hit
        self._single = (head, tail, converted, count) if len(raws) == 1 and kept == (0,) else None

    def _same_single(self, data: bytes, single: tuple[bytes, bytes, bytes, int]) -> tuple[bytes, int] | None:
        """``_same_layout`` for a layout with one raw entry that the conversion keeps."""
        head, tail, converted, count = single
        h = len(head)
        try:
            if not data.startswith(head) or data[h] != _ID_TAG:
                return None
            id_end = data[h + 1]
            if not 0 < id_end < 0x80:
                return None
            id_end += h + 2
            if not data.startswith(tail, id_end):
                return None
            tag = id_end + len(tail)
            if data[tag] != self._raw_tag:
                return None
            length = data[tag + 1]
            pos = tag + 2
            if length >= 0x80:
                second = data[pos]
                if second < 0x80:   # a two-byte length (entries of 128 B to 16 KB), without the call
                    length = (length & 0x7F) | (second << 7)
                    pos += 1
                else:
                    length, pos = _long_length(data, pos, length)
        except (IndexError, ValueError):
            return None
        if pos + length != len(data):
            return None
        ident = data[h + 2:id_end]
        if not (ident.isascii() or _utf8(ident)):
            return None
        self._hits += 1
        return b"".join((data[h:id_end], converted, self._out_raw_tag, data[tag + 1:])), count

    def _same_layout(self, data: bytes, layout: tuple[bytes, bytes, int, Skeleton]) -> tuple[bytes, int] | None:
        """The conversion of a record laid out as the remembered one, or None (then it is scanned)."""
        head, tail, n_raw, hit = layout
        h = len(head)
        n = len(data)
        try:
            if not data.startswith(head) or data[h] != _ID_TAG:
                return None
            length = data[h + 1]
            if not 0 < length < 0x80:
                return None
            pos = h + 2 + length
            if not data.startswith(tail, pos):
                return None
            id_end = pos
            pos += len(tail)
            raw_tag = self._raw_tag
            raws: list[tuple[int, int]] = []
            while pos < n:
                if data[pos] != raw_tag:
                    return None
                start = pos + 1
                length = data[start]
                pos += 2
                if length >= 0x80:
                    length, pos = _long_length(data, pos, length)
                pos += length
                raws.append((start, pos))
        except (IndexError, ValueError):
            return None
        if pos != n or len(raws) != n_raw:
            return None
        ident = data[h + 2:id_end]
        if not (ident.isascii() or _utf8(ident)):
            return None
        self._hits += 1
        return self._output(data, data[h:id_end], hit, raws)

    def _learn(self, key: tuple[bytes, int]) -> Skeleton | None:
        skeleton, n_raw = key
        self._misses += 1
        if self._misses > self._hits + MISS_SLACK:
            self._hits = self._misses = 0
            self._off = OFF_FOR
            return None
        if len(skeleton) > MAX_SKELETON_BYTES:
            return None
        try:
            source = self._source.FromString(skeleton)
        except (DecodeError, RuntimeError, TypeError, ValueError):
            return None
        parts(source)[1].extend(str(i).encode() for i in range(n_raw))
        target = self._convert(source, self._tensors, self._renames)
        tensors, raw = parts(target)
        kept = tuple(int(r) for r in raw)
        del raw[:]
        converted = (target.SerializeToString(), kept, len(tensors))
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key] = converted
        return converted
