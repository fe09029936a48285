"""Per-record transforms (by chain type) and the trigger check.

Thin glue between a compiled ``SourceNode`` and ``dataflow.codec``: the codec does the message
work; here we pick the converter, the tensor subset and the renames for one source.
"""
from __future__ import annotations

from dataflow import codec
from dataflow.topology.model import ChainType, SourceNode

_CONVERTERS = {
    ChainType.OUTPUT_INPUT: (codec.parse_response, codec.convert_to_request),
    ChainType.INPUT_INPUT: (codec.parse_request, codec.filter_request),
    ChainType.OUTPUT_OUTPUT: (codec.parse_response, codec.filter_response),
    ChainType.INPUT_OUTPUT: (codec.parse_request, codec.convert_to_response),
}


def apply_chain(source: SourceNode, value: bytes | None) -> codec.InferMessage | bytes:
    """The sink message for one source record: a ModelInferRequest/Response, or for PASSTHROUGH the
    bytes unchanged. Raises ``codec.CodecError`` on undecodable values."""
    if source.chain is ChainType.PASSTHROUGH:
        if value is None:
            raise codec.CodecError("record has no value (tombstone)")
        return value
    parse, convert = _CONVERTERS[source.chain]
    return convert(parse(value), source.subset, source.renames or None)


def is_empty(result: codec.InferMessage | bytes) -> bool:
    """True when a converted message has no tensors (dropped unless passEmptyResponses)."""
    if isinstance(result, (bytes, bytearray)):
        return False
    return not codec.has_tensors(result)


def serialize(result: codec.InferMessage | bytes) -> bytes:
    return bytes(result) if isinstance(result, (bytes, bytearray)) else result.SerializeToString()


def trigger_fires(trigger: SourceNode, value: bytes | None) -> bool:
    """A trigger record counts if, read as a ModelInferResponse whatever its topic, it carries at
    least one tensor of the trigger's subset (any tensor if no subset). Content is irrelevant."""
    resp = codec.parse_response(value)
    return codec.has_tensors(codec.convert_to_request(resp, trigger.subset))


def merge_joined(values: list[bytes | None], produces_requests: bool) -> bytes:
    """Join merge: left-to-right in source order, missing branches skipped."""
    parse = codec.parse_request if produces_requests else codec.parse_response
    merged = None
    for v in values:
        if v is None:
            continue
        merged = codec.join_values(merged, parse(v))
    return b"" if merged is None else merged.SerializeToString()
