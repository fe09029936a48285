"""``seldon.mlops.health.HealthCheckService/HealthCheck`` without generated stubs.

The request is empty and the response is ``{ok: bool}`` (field 1), so the wire bytes are
written by hand: ``08 01`` is ``ok: true``.
"""
from __future__ import annotations

import grpc

SERVICE = "seldon.mlops.health.HealthCheckService"
OK_TRUE = b"\x08\x01"


def health_handler() -> grpc.GenericRpcHandler:
    async def check(request: bytes, context) -> bytes:
        return OK_TRUE

    return grpc.method_handlers_generic_handler(SERVICE, {
        "HealthCheck": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=lambda b: b, response_serializer=lambda b: b),
    })
