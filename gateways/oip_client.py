"""Async Open Inference Protocol clients the model gateway calls models with.

gRPC: the ``inference.GRPCInferenceService`` stub shipped with tritonclient over ``grpc.aio``, so the
``ModelInferRequest`` read from Kafka goes to the server unchanged (raw contents included), and
the response's header/trailer metadata is available. REST: ``POST /v2/models/<m>/infer`` with the
request converted to JSON (BYTES as strings, as MLServer expects) and the JSON answer converted
back to protobuf. Failures raise ``InferError`` whose text matches the reference model gateway's
(Go) error strings, e.g. ``rpc error: code = InvalidArgument desc = ...``; for REST the server's
error body.

Failing fast while a model server is down: a client (one per server, shared by every model it
serves, see ``ClientPool``) retries an UNAVAILABLE call a bounded number of times within a short
budget, and a ``CircuitBreaker`` counts consecutive connection failures; once open, calls fail at
once with an UNAVAILABLE error (no connection attempt, no retry) until a cool-down has passed, then
one call at a time probes the server. A burst sent to a dead server therefore answers errors at
the rate the gateway can write them instead of one per ~1.5 s of retries per worker.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Protocol
from urllib.parse import urlparse

import aiohttp
import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dataflow import headers as H
from dataflow.oip import json as oip_json

MAX_MESSAGE = 1000 * 1024 * 1024
# The reference retries UNAVAILABLE 5 times, exponentially from 100 ms (1.5 s per request): with 8
# workers a burst to a dead server then mostly times out. Here: at most 3 attempts within 0.35 s,
# and none at all while the server's circuit is open.
RETRIES = 3
RETRY_BASE_S = 0.05
RETRY_BUDGET_S = 0.35
# Circuit breaker: opens after this many consecutive connection failures, stays open (failing calls
# at once) for OPEN_S, doubling on each failed probe up to MAX_OPEN_S.
BREAKER_FAILURES = 5
BREAKER_OPEN_S = 0.5
BREAKER_MAX_OPEN_S = 5.0
RECONNECT_MAX_MS = 2000


class InferError(RuntimeError):
    """The model call failed; ``str()`` is the text that goes on the error topic.

    ``whole_batch``: the failure is the server's (unreachable, timed out), not one request's, so
    every member of a batched call gets it; otherwise the members are retried one by one."""

    def __init__(self, text: str, whole_batch: bool = False) -> None:
        super().__init__(text)
        self.whole_batch = whole_batch


def go_code_name(code: grpc.StatusCode) -> str:
    """grpc-go's spelling of a status code (``INVALID_ARGUMENT`` -> ``InvalidArgument``)."""
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"
    if code == grpc.StatusCode.OK:
        return "OK"
    return "".join(part.capitalize() for part in code.name.split("_"))


def grpc_error_text(code: grpc.StatusCode, details: str | None) -> str:
    return f"rpc error: code = {go_code_name(code)} desc = {details or ''}"


def invalid_metadata(headers: list[tuple[str, str]]) -> str | None:
    """Why gRPC would refuse this metadata, in grpc-go's words (the reference gateway's error), or
    None. grpc itself only says ``Failed "execute_batch": (<...Operation object at ...>)``."""
    for k, v in headers:
        if not _KEY.fullmatch(k):
            return f'header key "{k}" contains illegal characters not in [0-9a-z-_.]'
        if not _VALUE.fullmatch(v) and not k.endswith("-bin"):
            return f'header key "{k}" contains value with non-printable ASCII characters'
    return None


_KEY = re.compile(r"[0-9a-z_.\-]+")
_VALUE = re.compile(r"[ -~]*")


class CircuitBreaker:
    """Consecutive connection failures to one model server -> fail calls at once for a while.

    Closed: calls go through; ``BREAKER_FAILURES`` consecutive failures open it. Open: ``allow()``
    is False until ``open_s`` has passed; then a single caller is let through as a probe (the
    others still fail fast); its success closes the breaker, its failure reopens it for twice as
    long (up to ``max_open_s``). Loop-confined: no locking.
    """

    def __init__(self, failures: int = BREAKER_FAILURES, open_s: float = BREAKER_OPEN_S,
                 max_open_s: float = BREAKER_MAX_OPEN_S, clock=None) -> None:
        self.failures_to_open = failures
        self.base_open_s = open_s
        self.max_open_s = max_open_s
        self._clock = clock or time.monotonic
        self.failures = 0
        self.open_until: float | None = None   # None: closed
        self.open_s = open_s
        self._probing = False
        self.last_error = ""

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def allow(self) -> bool:
        if self.open_until is None:
            return True
        if self._probing or self._clock() < self.open_until:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self.failures, self.open_until, self.open_s, self._probing = 0, None, self.base_open_s, False

    def failure(self, error: str) -> None:
        self.last_error = error
        self.failures += 1
        if self._probing:  # the probe failed: stay open, longer
            self._probing = False
            self.open_s = min(self.open_s * 2, self.max_open_s)
            self.open_until = self._clock() + self.open_s
        elif self.open_until is None and self.failures >= self.failures_to_open:
            self.open_until = self._clock() + self.open_s

    def release_probe(self) -> None:
        """The probe ended without telling whether the server is up (e.g. it timed out)."""
        self._probing = False


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
    """One ``grpc.aio`` channel to one model server, shared by every model it serves."""

    def __init__(self, target: str, breaker: CircuitBreaker | None = None) -> None:
        self.target = target
        self.breaker = breaker or CircuitBreaker()
        self._channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
            # gRPC's reconnect backoff grows to 120 s by default: a restarted model server would
            # stay unused (calls failing UNAVAILABLE) for up to that long.
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS)])
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def _circuit_open(self) -> InferError:
        return InferError(grpc_error_text(
            grpc.StatusCode.UNAVAILABLE, f"model server {self.target} is unreachable, failing fast for "
            f"{self.breaker.open_s:g}s (last error: {self.breaker.last_error})"), whole_batch=True)

    async def infer(self, request, headers, timeout_s):
        bad = invalid_metadata(headers)
        if bad is not None:
            raise InferError(grpc_error_text(grpc.StatusCode.INTERNAL, bad))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        retry_until = loop.time() + RETRY_BUDGET_S
        delay = RETRY_BASE_S
        breaker = self.breaker
        for attempt in range(RETRIES):
            if not breaker.allow():
                raise self._circuit_open()
            left = deadline - loop.time()
            if left <= 0:
                breaker.release_probe()
                raise InferError(grpc_error_text(grpc.StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded"),
                                 whole_batch=True)
            call = self._stub.ModelInfer(request, metadata=headers, timeout=left)
            try:
                resp = await call
                md = list(await call.initial_metadata() or ()) + list(await call.trailing_metadata() or ())
                breaker.success()
                return resp, _x_headers(md)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                details = exc.details()
                if code != grpc.StatusCode.UNAVAILABLE:
                    timed_out = code == grpc.StatusCode.DEADLINE_EXCEEDED
                    if timed_out:  # slow or hung: says nothing about being up
                        breaker.release_probe()
                        details = "context deadline exceeded"
                    else:  # the server answered: it is up
                        breaker.success()
                    raise InferError(grpc_error_text(code, details), whole_batch=timed_out) from None
                breaker.failure(details or "")
                now = loop.time()
                if attempt + 1 < RETRIES and now + delay < min(deadline, retry_until) and not breaker.is_open:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                raise InferError(grpc_error_text(code, details), whole_batch=True) from None
            except BaseException:
                breaker.release_probe()
                raise
        raise InferError(grpc_error_text(grpc.StatusCode.UNAVAILABLE, "retries exhausted"), whole_batch=True)

    async def close(self) -> None:
        await self._channel.close()


class _Unreachable(InferError):
    """The server could not be connected to (counts towards opening the circuit)."""

    def __init__(self, text: str, detail: str) -> None:
        super().__init__(text, whole_batch=True)
        self.detail = detail


class RestOipClient:
    """One aiohttp session (connection pool) to one model server, shared by the models it serves."""

    def __init__(self, base_url: str, breaker: CircuitBreaker | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.breaker = breaker or CircuitBreaker()
        self._session: aiohttp.ClientSession | None = None

    async def infer(self, request, headers, timeout_s):
        breaker = self.breaker
        if not breaker.allow():
            raise InferError(f'Post "{self.base_url}/v2/models/{request.model_name}/infer": model server '
                             f"unreachable, failing fast for {breaker.open_s:g}s (last error: {breaker.last_error})",
                             whole_batch=True)
        try:
            resp = await self._infer(request, headers, timeout_s)
        except _Unreachable as exc:
            breaker.failure(exc.detail)
            raise InferError(str(exc)) from None
        except BaseException:
            breaker.release_probe()
            raise
        breaker.success()
        return resp

    async def _infer(self, request, headers, timeout_s):
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
        except TimeoutError:
            raise InferError(f'Post "{url}": context deadline exceeded', whole_batch=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise _Unreachable(f'Post "{url}": {exc}', str(exc)) from None
        except aiohttp.ClientError as exc:
            raise InferError(f'Post "{url}": {exc}') from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class ClientPool:
    """Clients shared per model server: models served at the same endpoint use one channel (or
    session) and one circuit breaker, so a dead server is noticed once, not once per model."""

    def __init__(self) -> None:
        self._clients: dict[str, tuple[OipClient, int]] = {}

    def acquire(self, endpoint: str) -> OipClient:
        key = normalise_endpoint(endpoint)
        client, users = self._clients.get(key, (None, 0))
        if client is None:
            client = client_for(endpoint)
        self._clients[key] = (client, users + 1)
        return client

    async def release(self, endpoint: str) -> None:
        key = normalise_endpoint(endpoint)
        client, users = self._clients[key]
        if users > 1:
            self._clients[key] = (client, users - 1)
            return
        del self._clients[key]
        await client.close()

    def __len__(self) -> int:
        return len(self._clients)


def normalise_endpoint(endpoint: str) -> str:
    """``host:port`` and ``grpc://host:port`` name the same server."""
    if "://" not in endpoint:
        return f"grpc://{endpoint}"
    return endpoint.rstrip("/")


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
