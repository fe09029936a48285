"""Async Open Inference Protocol clients the model gateway calls models with.

gRPC: the ``inference.GRPCInferenceService`` stub shipped with tritonclient over ``grpc.aio``, so the
``ModelInferRequest`` read from Kafka goes to the server unchanged (raw contents included), and
the response's header/trailer metadata is available. REST: ``POST /v2/models/<m>/infer`` with the
request converted to JSON (BYTES as strings, as MLServer expects) and the JSON answer converted
back to protobuf. Failures raise ``InferError`` whose text matches the reference model gateway's
(Go) error strings, e.g. ``rpc error: code = InvalidArgument desc = ...``; for REST the server's
error body.
"""
from __future__ import annotations

import asyncio
import json
from typing import Protocol
from urllib.parse import urlparse

import aiohttp
import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dataflow import headers as H

from gateways import oip_json

MAX_MESSAGE = 1000 * 1024 * 1024
RETRIES = 5  # reference: gRPC retry interceptor, 5 attempts, exponential from 100 ms
RETRY_BASE_S = 0.1


class InferError(RuntimeError):
    """The model call failed; ``str()`` is the text that goes on the error topic."""


def go_code_name(code: grpc.StatusCode) -> str:
    """grpc-go's spelling of a status code (``INVALID_ARGUMENT`` -> ``InvalidArgument``)."""
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"
    if code == grpc.StatusCode.OK:
        return "OK"
    return "".join(part.capitalize() for part in code.name.split("_"))


def grpc_error_text(code: grpc.StatusCode, details: str | None) -> str:
    return f"rpc error: code = {go_code_name(code)} desc = {details or ''}"


class OipClient(Protocol):
    async def infer(self, request: pb.ModelInferRequest, headers: list[tuple[str, str]],
                    timeout_s: float) -> tuple[pb.ModelInferResponse, list[tuple[str, bytes]]]: ...

    async def close(self) -> None: ...


def _x_headers(pairs) -> list[tuple[str, bytes]]:
    out = []
    for k, v in pairs or ():
        lk = k.lower()
        if lk.startswith("x-") and isinstance(v, str):
            out.append((lk, v.encode()))
    return out


class GrpcOipClient:
    def __init__(self, target: str) -> None:
        self.target = target
        self._channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)])
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    async def infer(self, request, headers, timeout_s):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = RETRY_BASE_S
        for attempt in range(RETRIES):
            left = deadline - loop.time()
            if left <= 0:
                raise InferError(grpc_error_text(grpc.StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded"))
            call = self._stub.ModelInfer(request, metadata=headers, timeout=left)
            try:
                resp = await call
                md = list(await call.initial_metadata() or ()) + list(await call.trailing_metadata() or ())
                return resp, _x_headers(md)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAVAILABLE and attempt + 1 < RETRIES and loop.time() + delay < deadline:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                details = exc.details()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    details = "context deadline exceeded"
                raise InferError(grpc_error_text(code, details)) from None
        raise InferError(grpc_error_text(grpc.StatusCode.UNAVAILABLE, "retries exhausted"))

    async def close(self) -> None:
        await self._channel.close()


class RestOipClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def infer(self, request, headers, timeout_s):
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        model = request.model_name
        url = f"{self.base_url}/v2/models/{model}/infer"
        send = {"Content-Type": "application/json", H.SELDON_MODEL: model}
        for k, v in headers:
            if k == H.REQUEST_ID:
                send[k] = v
        body = json.dumps(oip_json.request_to_json(request), separators=(",", ":"))
        try:
            async with self._session.post(url, data=body, headers=send,
                                          timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                payload = await r.read()
                if r.status != 200:
                    raise InferError(payload.decode("utf-8", "replace"))
                try:
                    resp = oip_json.response_from_json(payload)
                except oip_json.OipJsonError as exc:
                    raise InferError(f"invalid response from {url}: {exc}") from None
                return resp, _x_headers(r.headers.items())
        except asyncio.TimeoutError:
            raise InferError(f'Post "{url}": context deadline exceeded') from None
        except aiohttp.ClientError as exc:
            raise InferError(f'Post "{url}": {exc}') from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def client_for(endpoint: str) -> OipClient:
    """``grpc://host:port`` (or bare ``host:port``) -> gRPC; ``http(s)://host:port`` -> REST."""
    if "://" not in endpoint:
        return GrpcOipClient(endpoint)
    u = urlparse(endpoint)
    if u.scheme == "grpc":
        return GrpcOipClient(u.netloc)
    if u.scheme in ("http", "https"):
        return RestOipClient(endpoint)
    raise ValueError(f"unsupported model endpoint {endpoint!r}: use grpc://HOST:PORT or http://HOST:PORT")
