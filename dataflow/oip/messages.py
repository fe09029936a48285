"""Record bytes <-> OIP messages, with the Confluent schema-registry framing stripped first."""
from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError
from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow.oip.datatypes import CodecError

_SCHEMA_PREFIX_LEN = 6
_Message = TypeVar("_Message", ModelInferRequest, ModelInferResponse)


def strip_schema_prefix(data: bytes) -> bytes:
    """Drop Confluent schema-registry framing (0x00, 4-byte schema id, 1 index byte).

    A protobuf message never starts with byte 0, so the rule is safe to apply to every value."""
    if len(data) >= _SCHEMA_PREFIX_LEN and data[0] == 0:
        return data[_SCHEMA_PREFIX_LEN:]
    return data


def _parse(cls: type[_Message], data: object, what: str) -> _Message:
    if data is None:
        raise CodecError(f"cannot parse {what}: the record has no value (tombstone)")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"cannot parse {what}: expected bytes, got {type(data).__name__}")
    payload = strip_schema_prefix(data if isinstance(data, bytes) else bytes(data))
    try:
        return cls.FromString(payload)
    except (DecodeError, RuntimeError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot parse {what} from {len(data)} bytes: {exc}") from exc


def parse_request(data: bytes | None) -> ModelInferRequest:
    """Bytes of an ``*.inputs`` record -> ModelInferRequest (``b""`` -> empty request; a tombstone
    raises ``CodecError``)."""
    return _parse(ModelInferRequest, data, "ModelInferRequest")


def parse_response(data: bytes | None) -> ModelInferResponse:
    """Bytes of an ``*.outputs`` record -> ModelInferResponse (``b""`` -> empty response; a tombstone
    raises ``CodecError``)."""
    return _parse(ModelInferResponse, data, "ModelInferResponse")
