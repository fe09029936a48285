"""Gateway wire rules that are pure functions: which resource a call is for, request ids, the
composite Kafka key, and which caller / record headers cross the gateway, as the reference gateway decides them.
"""
from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dataflow import headers as H
from dataflow.kafka import TopicNamer

EXTERNAL_PREFIX = "x-"
PIPELINE_SUFFIX = "pipeline"
MODEL_SUFFIX = "model"


class RoutingError(ValueError):
    """The routing header is missing or malformed."""


class BadHeader(ValueError):
    """A caller header that cannot travel on Kafka (e.g. a non-ASCII ``x-`` value)."""


@dataclass(frozen=True, slots=True)
class Resource:
    """What a call targets: a pipeline, or a single model through its own topics."""

    name: str
    is_model: bool

    def input_topic(self, namer: TopicNamer) -> str:
        return namer.model_inputs(self.name) if self.is_model else namer.pipeline_inputs(self.name)

    def output_topic(self, namer: TopicNamer) -> str:
        return namer.model_outputs(self.name) if self.is_model else namer.pipeline_outputs(self.name)

    @property
    def header_value(self) -> str:
        return f"{self.name}.{MODEL_SUFFIX if self.is_model else PIPELINE_SUFFIX}"


def resource_from_header(value: str | None) -> Resource:
    """``x.pipeline`` -> pipeline x; ``x.model`` or ``x`` -> model x; otherwise ``RoutingError``."""
    value = value or ""
    parts = value.split(".")
    if len(parts) == 1 and parts[0]:
        return Resource(value, True)
    if len(parts) == 2 and parts[0]:
        if parts[1] == PIPELINE_SUFFIX:
            return Resource(parts[0], False)
        if parts[1] == MODEL_SUFFIX:
            return Resource(parts[0], True)
    raise RoutingError(f"Bad or missing header {H.SELDON_MODEL} {value}")


def resource_from_name(name: str) -> Resource:
    """A name given without a routing header (a URL path, gRPC ``model_name``): ``x.pipeline`` and
    ``x.model`` as in the header, but a bare ``x`` is pipeline x: this is a pipeline gateway, so a
    standard client calling model ``x`` means the pipeline."""
    parts = name.split(".")
    if len(parts) == 2 and parts[0] and parts[1] in (PIPELINE_SUFFIX, MODEL_SUFFIX):
        return resource_from_header(name)
    if name and "." not in name:
        return Resource(name, False)
    raise RoutingError(f"Bad or missing header {H.SELDON_MODEL} {name}")


def resource_from_values(internal: list[str], model: list[str], path_pipeline: str | None = None,
                         path_name: str | None = None) -> Resource:
    """Resolution order of the reference gateway: last ``seldon-internal-model`` value, else ``seldon-model``.

    Convenience beyond the reference (which relies on Envoy to set the header): with neither
    header present, ``/v2/pipelines/{name}/...`` names the pipeline, and ``/v2/models/{name}/...``
    (``path_name``) names a resource as ``resource_from_name`` reads it.
    """
    if internal:
        return resource_from_header(internal[-1])
    if model:
        return resource_from_header(model[0])
    if path_pipeline:
        return Resource(path_pipeline, False)
    if path_name:
        return resource_from_name(path_name)
    return resource_from_header(None)


def composite_key(partition: int, resource: str, request_id: str) -> str:
    """The Kafka key the gateway writes and correlates on: ``<p>.<resource>.<requestId>``."""
    return f"{partition}.{resource}.{request_id}"


# ---- request ids (xid: 12 bytes = time, machine, pid, counter; base32hex, 20 chars) -------------

_B32HEX = "0123456789abcdefghijklmnopqrstuv"
_MACHINE = os.urandom(3)
_COUNTER = itertools.count(random.getrandbits(24))
_COUNTER_LOCK = threading.Lock()


def _b32hex(raw: bytes) -> str:
    n = int.from_bytes(raw, "big") << 4  # 96 bits -> 100 bits = 20 symbols
    return "".join(_B32HEX[(n >> (5 * i)) & 31] for i in range(19, -1, -1))


def new_request_id() -> str:
    """An xid-like id (``github.com/rs/xid`` layout): sortable by time, 20 chars of ``[0-9a-v]``."""
    with _COUNTER_LOCK:
        c = next(_COUNTER) & 0xFFFFFF
    raw = (int(time.time()).to_bytes(4, "big") + _MACHINE + (os.getpid() & 0xFFFF).to_bytes(2, "big")
           + c.to_bytes(3, "big"))
    return _b32hex(raw)


# ---- headers --------------------------------------------------------------------------------


def caller_headers(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """Caller HTTP headers / gRPC metadata that travel on Kafka: ``x-*`` keys, lower-cased, all values.

    Values must be ASCII (``BadHeader`` otherwise): they come back as response headers, and a
    server decodes undecodable header bytes into text that cannot be encoded again."""
    out = []
    for k, v in pairs:
        lk = k.lower()
        if lk.startswith(EXTERNAL_PREFIX) and not lk.endswith("-bin"):
            raw = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)
            if not raw.isascii():
                raise BadHeader(f"header {k} has a non-ASCII value")
            out.append((lk, raw))
    return out


def request_headers(caller: list[tuple[str, bytes]], resource: Resource, request_id: str) -> list[tuple[str, bytes]]:
    """Kafka headers of a gateway request: caller ``x-*`` + ``pipeline`` + ``x-request-id`` if absent."""
    out = list(caller)
    out.append((H.PIPELINE, resource.name.encode()))
    if not any(k == H.REQUEST_ID for k, _ in out):
        out.append((H.REQUEST_ID, request_id.encode()))
    return out


def external_headers(headers: Iterable[tuple[str, bytes]] | None) -> list[tuple[str, str]]:
    """Record headers returned to a caller: the ``x-*`` ones, in order, as text."""
    return [(k, (v or b"").decode("utf-8", "replace")) for k, v in headers or ()
            if k.lower().startswith(EXTERNAL_PREFIX)]


def error_message(headers: Iterable[tuple[str, bytes]] | None, value: bytes | None) -> str | None:
    """``"<seldon-pipeline-errors value> : <record value>"`` for an error record, else None."""
    hdr = H.first(list(headers or ()), H.PIPELINE_ERRORS)
    if hdr is None:
        return None
    return f"{hdr.decode('utf-8', 'replace')} : {(value or b'').decode('utf-8', 'replace')}"


def grpc_response_metadata(headers: Iterable[tuple[str, bytes]] | None, key: str) -> list[tuple[str, str]]:
    """gRPC header metadata of a response: ``x-*`` record headers, ``x-request-id`` replaced by the key."""
    md = [(k.lower(), v) for k, v in external_headers(headers) if k.lower() != H.REQUEST_ID]
    md.append((H.REQUEST_ID, key))
    return md


def header_values(mapping: Mapping[str, str] | Iterable[tuple[str, str]], name: str) -> list[str]:
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    return [v for k, v in items if k.lower() == name]
