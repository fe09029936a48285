"""Per-record transforms (by chain type) and the trigger check.

Thin glue between a compiled ``SourceNode`` and ``dataflow.oip``: the OIP package does the message
work; here we pick the converter, the tensor subset and the renames for one source.
"""
from __future__ import annotations

from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow import oip
from dataflow.oip.wire import WireConverter
from dataflow.oip.wire_merge import WireMerge
from dataflow.topology.model import ChainType, SourceNode

_CONVERTERS = {
    ChainType.OUTPUT_INPUT: (oip.parse_response, oip.convert_to_request),
    ChainType.INPUT_INPUT: (oip.parse_request, oip.filter_request),
    ChainType.OUTPUT_OUTPUT: (oip.parse_response, oip.filter_response),
    ChainType.INPUT_OUTPUT: (oip.parse_request, oip.convert_to_response),
}

_WIRE_MESSAGES = {
    ChainType.OUTPUT_INPUT: (ModelInferResponse, ModelInferRequest),
    ChainType.INPUT_INPUT: (ModelInferRequest, ModelInferRequest),
    ChainType.OUTPUT_OUTPUT: (ModelInferResponse, ModelInferResponse),
    ChainType.INPUT_OUTPUT: (ModelInferRequest, ModelInferResponse),
}


def wire_converter(source: SourceNode) -> WireConverter | None:
    """A bytes-to-bytes converter giving ``apply_chain``'s serialised result for most values
    (``dataflow.oip.wire``); None for PASSTHROUGH, which has nothing to convert."""
    if source.chain is ChainType.PASSTHROUGH:
        return None
    message, target = _WIRE_MESSAGES[source.chain]
    return WireConverter(message, target, _CONVERTERS[source.chain][1], source.subset, source.renames or None)


def apply_chain(source: SourceNode, value: bytes | None) -> oip.InferMessage | bytes:
    """The sink message for one source record: a ModelInferRequest/Response, or for PASSTHROUGH the
    bytes unchanged. Raises ``oip.CodecError`` on undecodable values."""
    if source.chain is ChainType.PASSTHROUGH:
        if value is None:
            raise oip.CodecError("record has no value (tombstone)")
        return value
    parse, convert = _CONVERTERS[source.chain]
    return convert(parse(value), source.subset, source.renames or None)


def is_empty(result: oip.InferMessage | bytes) -> bool:
    """True when a converted message has no tensors (dropped unless passEmptyResponses)."""
    if isinstance(result, (bytes, bytearray)):
        return False
    return not oip.has_tensors(result)


def serialize(result: oip.InferMessage | bytes) -> bytes:
    return bytes(result) if isinstance(result, (bytes, bytearray)) else result.SerializeToString()


def trigger_fires(trigger: SourceNode, value: bytes | None) -> bool:
    """A trigger record counts if, read as a ModelInferResponse whatever its topic, it carries at
    least one tensor of the trigger's subset (any tensor if no subset). Content is irrelevant."""
    resp = oip.parse_response(value)
    return oip.has_tensors(oip.convert_to_request(resp, trigger.subset))


def merge_joined(values: list[bytes | None], produces_requests: bool) -> bytes:
    """Join merge: left-to-right in source order, missing branches skipped."""
    parse = oip.parse_request if produces_requests else oip.parse_response
    merged = None
    for v in values:
        if v is None:
            continue
        merged = oip.join_values(merged, parse(v))
    return b"" if merged is None else merged.SerializeToString()


class JoinMerge:
    """``merge_joined`` for one join step: on bytes when the values allow it
    (``dataflow.oip.wire_merge``, the same bytes), else the message way."""

    def __init__(self, produces_requests: bool):
        self._produces_requests = produces_requests
        self._wire = WireMerge(ModelInferRequest if produces_requests else ModelInferResponse)

    def __call__(self, values: list[bytes | None]) -> bytes:
        merged = self._wire(values)
        return merged if merged is not None else merge_joined(values, self._produces_requests)
