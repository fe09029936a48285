"""InitProducerId v3 for aiokafka's transactional producer (Faust ``exactly_once``).

Why: aiokafka 0.14 only knows InitProducerId v0; the embedded broker (Tansu) answers v0 with
UnknownError and needs v3 (docs/embedded-broker.md). v3 (KIP-360, a flexible version) is
accepted by real Kafka too (2.5+), and aiokafka negotiates the highest version both sides
support, so adding it changes nothing for brokers that lack it.

``enable_init_producer_id_v3()`` is called in a Faust worker process before the app starts when
exactly-once is configured. Request/response layouts follow the Kafka protocol definition of
InitProducerId v3: request ``transactional_id`` (compact nullable string),
``transaction_timeout_ms`` (int32), ``producer_id`` (int64, -1 for a new producer),
``producer_epoch`` (int16, -1), tagged fields; response ``throttle_time_ms``, ``error_code``,
``producer_id``, ``producer_epoch``, tagged fields.
"""
from __future__ import annotations

from typing import Any

from aiokafka.producer import sender
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import InitProducerIdRequest_v0
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields

_installed = False


def enable_init_producer_id_v3() -> None:
    global _installed
    if _installed:
        return

    class InitProducerIdResponseV3(Response):
        API_KEY = 22
        API_VERSION = 3
        SCHEMA = Schema(
            ("throttle_time_ms", Int32),
            ("error_code", Int16),
            ("producer_id", Int64),
            ("producer_epoch", Int16),
            ("tags", TaggedFields),
        )

    class InitProducerIdRequestV3(RequestStruct):
        API_KEY = 22
        API_VERSION = 3
        FLEXIBLE_VERSION = True
        RESPONSE_TYPE = InitProducerIdResponseV3
        SCHEMA = Schema(
            ("transactional_id", CompactString("utf-8")),
            ("transaction_timeout_ms", Int32),
            ("producer_id", Int64),
            ("producer_epoch", Int16),
            ("tags", TaggedFields),
        )

    class InitProducerIdRequestV0OrV3(Request[InitProducerIdRequest_v0 | InitProducerIdRequestV3]):
        API_KEY = 22

        def __init__(self, transactional_id: str, transaction_timeout_ms: int):
            self._transactional_id = transactional_id
            self._transaction_timeout_ms = transaction_timeout_ms

        def build(self, request_struct_class: type[Any]) -> Any:
            if request_struct_class is InitProducerIdRequestV3:
                return request_struct_class(self._transactional_id, self._transaction_timeout_ms, -1, -1, {})
            return request_struct_class(self._transactional_id, self._transaction_timeout_ms)

    sender.InitProducerIdRequest = InitProducerIdRequestV0OrV3
    _installed = True
