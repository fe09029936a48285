"""Follow the scheduler's model / pipeline status streams, reconnecting forever with backoff.

The gateways learn what to serve from ``Scheduler.SubscribeModelStatus`` (model gateway) and
``Scheduler.SubscribePipelineStatus`` (pipeline gateway). Keepalive pings are no more frequent than
every 60 s: the Go scheduler closes connections that ping more often (spec 0).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

import grpc

from chainer_api import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)

KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 2_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
]

_PS = scheduler_pb2.PipelineVersionState
_LIVE_PIPELINE = {_PS.PipelineCreate, _PS.PipelineCreating, _PS.PipelineReady, _PS.PipelineRebalancing}
_GONE_PIPELINE = {_PS.PipelineTerminate, _PS.PipelineTerminating, _PS.PipelineTerminated,
                  _PS.PipelineFailedTerminating}
_MS = scheduler_pb2.ModelStatus


ENDPOINT_PARAMETER = "endpoint"  # where scheduler_min stores a model's resolved OIP endpoint


def model_endpoint(model) -> str | None:
    """OIP endpoint of a model definition: the ``endpoint`` parameter, else a grpc/http(s) ``uri``."""
    for p in model.modelSpec.parameters:
        if p.name == ENDPOINT_PARAMETER and p.value:
            return p.value
    uri = model.modelSpec.uri
    return uri if uri.startswith(("grpc://", "http://", "https://")) else None


@dataclass(frozen=True)
class ModelEvent:
    name: str
    available: bool  # False: removed / not servable
    endpoint: str | None  # OIP endpoint from the model definition (``grpc://h:p`` / ``http://h:p``), if any
    version: int = 0


@dataclass(frozen=True)
class PipelineEvent:
    name: str
    live: bool  # True: serve it (created/ready); False: deleted
    version: int = 0


def model_event(msg) -> ModelEvent:
    """Interpret one ``ModelStatusResponse``: latest version available and not deleted -> serve."""
    if msg.deleted or not msg.versions:
        return ModelEvent(msg.modelName, False, None)
    latest = msg.versions[-1]
    endpoint = None
    if latest.HasField("modelDefn"):
        endpoint = model_endpoint(latest.modelDefn)
    available = latest.state.state == _MS.ModelAvailable
    return ModelEvent(msg.modelName, available, endpoint, latest.version)


def pipeline_event(msg) -> PipelineEvent | None:
    """Interpret one ``PipelineStatusResponse``; None when the state says nothing actionable."""
    if not msg.versions:
        return PipelineEvent(msg.pipelineName, False)
    latest = msg.versions[-1]
    status = latest.state.status
    if status in _LIVE_PIPELINE:
        return PipelineEvent(msg.pipelineName, True, latest.state.pipelineVersion)
    if status in _GONE_PIPELINE:
        return PipelineEvent(msg.pipelineName, False, latest.state.pipelineVersion)
    return None


async def _follow(target: str, open_stream: Callable, handle: Callable[[object], Awaitable[None] | None],
                  stop: asyncio.Event, what: str) -> None:
    backoff = 0.2
    while not stop.is_set():
        channel = grpc.aio.insecure_channel(target, options=KEEPALIVE_OPTIONS)
        try:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            call = open_stream(stub)
            async for msg in call:
                backoff = 0.2
                res = handle(msg)
                if asyncio.iscoroutine(res):
                    await res
                if stop.is_set():
                    break
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            log.warning("scheduler %s stream to %s ended: %s %s", what, target, exc.code().name, exc.details())
        except Exception:  # noqa: BLE001 - keep following whatever a handler did
            log.exception("scheduler %s stream handler failed", what)
        finally:
            await channel.close()
        try:
            await asyncio.wait_for(stop.wait(), timeout=backoff)
        except asyncio.TimeoutError:
            pass
        backoff = min(backoff * 2, 5.0)


async def follow_models(target: str, subscriber: str, handle: Callable[[ModelEvent], Awaitable[None] | None],
                        stop: asyncio.Event) -> None:
    req = scheduler_pb2.ModelSubscriptionRequest(subscriberName=subscriber)
    await _follow(target, lambda stub: stub.SubscribeModelStatus(req),
                  lambda msg: handle(model_event(msg)), stop, "model status")


async def follow_pipelines(target: str, subscriber: str,
                           handle: Callable[[PipelineEvent], Awaitable[None] | None],
                           stop: asyncio.Event) -> None:
    req = scheduler_pb2.PipelineSubscriptionRequest(subscriberName=subscriber, isPipelineGateway=True)

    def on_msg(msg):
        ev = pipeline_event(msg)
        return handle(ev) if ev is not None else None

    await _follow(target, lambda stub: stub.SubscribePipelineStatus(req), on_msg, stop, "pipeline status")
