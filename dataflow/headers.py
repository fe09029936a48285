"""Kafka record header names: one place for the header wire contract."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TypeGuard, Union

PIPELINE = "pipeline"
PIPELINE_VERSION = "x-pipeline-version"
REQUEST_ID = "x-request-id"
PIPELINE_ERRORS = "seldon-pipeline-errors"
INFER_TYPE = "seldon-infer-type"
SELDON_ROUTE = "x-seldon-route"
ALIBI_TYPE = "x-seldon-alibi-type"
ALIBI_METHOD = "x-seldon-alibi-method"
ALIBI_DISCARDS = (ALIBI_TYPE, ALIBI_METHOD)
# Ours, not the reference's: when the caller stops waiting, as Unix epoch milliseconds (ASCII).
# Whoever publishes a request may set it; every step keeps it (headers pass through) and the model
# gateway skips the model call of a record whose caller has already given up.
DEADLINE = "dataflow-deadline-ms"

# Routing headers on the gateway's HTTP/gRPC side.
SELDON_MODEL = "seldon-model"
SELDON_INTERNAL_MODEL = "seldon-internal-model"

Headers = list[tuple[str, bytes]]
# What client libraries hand over: None, a dict, or pairs whose names and values may be str or bytes.
RawHeaders = Union[dict[str, str | bytes | None], Iterable[tuple[str | bytes, str | bytes | None]], None]  # noqa: UP007  # a runtime alias: `X | Y` of generic aliases and None cannot be evaluated


def values(headers: Iterable[tuple[str, bytes]] | None, name: str) -> list[bytes]:
    """All values of header ``name`` in order (Kafka headers may repeat)."""
    return [v for k, v in headers or () if k == name]


def first(headers: Iterable[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return v
    return None


def has_value(headers: Iterable[tuple[str, bytes]] | None, name: str, value: bytes) -> bool:
    """True if any instance of header ``name`` equals ``value`` (the pipeline filter rule)."""
    return any(k == name and v == value for k, v in headers or ())


def normalise(headers: RawHeaders) -> Headers:
    """Coerce client-library header shapes (None, dict, list of str/bytes pairs) to ``Headers``."""
    if not headers:
        return []
    if type(headers) is list and in_shape(headers):   # e.g. confluent-kafka's fresh list: kept, not copied
        return headers
    items = headers.items() if isinstance(headers, dict) else headers
    out: Headers = []
    for h in items:
        k, v = h
        if type(k) is str and type(v) is bytes:   # already in shape (confluent-kafka's): keep the pair
            out.append(h if type(h) is tuple else (k, v))  # type: ignore[arg-type]  # a (str, bytes) tuple, checked
            continue
        if isinstance(k, bytes):
            k = k.decode("utf-8", "replace")
        if v is None:
            v = b""
        elif isinstance(v, str):
            v = v.encode("utf-8")
        out.append((k, bytes(v)))
    return out


def in_shape(headers: Iterable[object]) -> TypeGuard[Headers]:
    """True if ``headers`` is already ``Headers``: (str, bytes) tuples, so that a pair can be found
    with ``in`` (a cheap check, run for every record a pipeline processes)."""
    for h in headers:
        if type(h) is not tuple or len(h) != 2 or not isinstance(h[0], str) or not isinstance(h[1], bytes):
            return False
    return True


_DROPPED_AT_SINK = frozenset((PIPELINE, PIPELINE_VERSION) + ALIBI_DISCARDS)


def sink_trailer(pipeline: str, version: int) -> Headers:
    """The headers every dataflow sink appends: fresh ``pipeline`` and ``x-pipeline-version``."""
    return [(PIPELINE, pipeline.encode()), (PIPELINE_VERSION, str(version).encode())]


def rewrite_for_sink(headers: Iterable[tuple[str, bytes]] | None, pipeline: str, version: int) -> Headers:
    """Header adjust at every dataflow sink, as the reference engine does it.

    Drops alibi headers and all ``pipeline`` / ``x-pipeline-version`` instances, keeps the rest
    in order, then appends fresh ``pipeline`` and ``x-pipeline-version``.
    """
    return rewrite_with(headers, sink_trailer(pipeline, version))


def rewrite_with(headers: Iterable[tuple[str, bytes]] | None, trailer: Headers) -> Headers:
    """``rewrite_for_sink`` with the trailer made once per step instead of once per record."""
    out = [(k, v) for k, v in headers or () if k not in _DROPPED_AT_SINK]
    out += trailer
    return out


def rewrite_client_pairs(headers: list[tuple[str, bytes | None]], trailer: Headers) -> Headers | None:
    """``rewrite_with`` of headers as a Kafka client hands them over ((name, value) pairs, a value
    possibly None), or None if some kept header has no value (``normalise`` would change it): one
    pass that keeps the pairs themselves instead of checking the shape first and copying after."""
    out = [h for h in headers if h[0] not in _DROPPED_AT_SINK]
    for h in out:
        if h[1] is None:
            return None
    out += trailer
    return out  # type: ignore[return-value]  # every value was just checked
