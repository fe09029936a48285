"""Models' KServe v2 metadata, asked of the servers that serve them, cached briefly.

The pipeline gateway describes a pipeline's tensors from its first and last steps' models
(``pipeline_signature``), which only the model servers know. A metadata call must not cost a
round trip to every model each time, nor wait long on a server that is down: answers are kept
``ttl_s`` (failures ``retry_s``, so a server that comes back is seen soon), each look-up is
bounded by ``timeout_s``, and concurrent look-ups of one model share a single call.

Endpoints come from the scheduler's model statuses (``grpc://host:port`` or ``http(s)://host:port``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlparse

import aiohttp
import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

TTL_S = 30.0
RETRY_S = 5.0
TIMEOUT_S = 2.0


def _from_proto(resp) -> dict:
    def tensors(ts):
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]

    return {"name": resp.name, "versions": list(resp.versions), "platform": resp.platform,
            "inputs": tensors(resp.inputs), "outputs": tensors(resp.outputs)}


async def fetch(endpoint: str, model: str, timeout_s: float = TIMEOUT_S) -> dict:
    """One model's metadata from its server; raises on any failure."""
    u = urlparse(endpoint)
    if u.scheme == "grpc":
        async with grpc.aio.insecure_channel(f"{u.hostname}:{u.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            return _from_proto(await stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=timeout_s))
    if u.scheme in ("http", "https"):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            async with session.get(f"{endpoint.rstrip('/')}/v2/models/{model}") as r:
                r.raise_for_status()
                return await r.json()
    raise ValueError(f"unsupported endpoint {endpoint!r}")


class ModelMetadataCache:
    def __init__(self, *, ttl_s: float = TTL_S, retry_s: float = RETRY_S, timeout_s: float = TIMEOUT_S,
                 fetcher=fetch) -> None:
        self.ttl_s, self.retry_s, self.timeout_s = ttl_s, retry_s, timeout_s
        self._fetch = fetcher
        self._endpoints: dict[str, str] = {}
        self._cached: dict[str, tuple[float, dict | None]] = {}  # model -> (expiry, metadata or None)
        self._inflight: dict[str, asyncio.Future] = {}

    def set_endpoint(self, model: str, endpoint: str | None) -> None:
        """The model's server (None: the model is gone); a change forgets what was cached."""
        if self._endpoints.get(model) != endpoint:
            self._cached.pop(model, None)
        if endpoint:
            self._endpoints[model] = endpoint
        else:
            self._endpoints.pop(model, None)

    async def get(self, model: str) -> dict | None:
        """The model's metadata, or None when it has no known server or the server did not answer."""
        endpoint = self._endpoints.get(model)
        if endpoint is None:
            return None
        hit = self._cached.get(model)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        fut = self._inflight.get(model)
        if fut is None:
            fut = asyncio.ensure_future(self._load(model, endpoint))
            self._inflight[model] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(model, None))
        return await asyncio.shield(fut)

    async def _load(self, model: str, endpoint: str) -> dict | None:
        try:
            meta = await self._fetch(endpoint, model, self.timeout_s)
            expiry = time.monotonic() + self.ttl_s
        except Exception as exc:
            log.info("no metadata for model %s from %s: %s", model, endpoint, exc)
            meta, expiry = None, time.monotonic() + self.retry_s
        if self._endpoints.get(model) == endpoint:
            self._cached[model] = (expiry, meta)
        return meta
