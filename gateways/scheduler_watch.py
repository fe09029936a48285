"""Follow the scheduler's model / pipeline status streams, reconnecting forever with backoff.

The gateways learn what to serve from ``Scheduler.SubscribeModelStatus`` (model gateway) and
``Scheduler.SubscribePipelineStatus`` (pipeline gateway). Keepalive pings are no more frequent than
every 60 s: the Go scheduler closes connections that ping more often.

Instructions and acks. A scheduler that knows about gateway acks sends a subscribed gateway
instructions: status messages whose ``operation`` is Create or Delete (with a ``timestamp``). The
gateway does what the operation says, whatever the status in the message: when gateways come and
go, the scheduler sends Delete to a replica that should no longer serve a pipeline while the
pipeline itself stays Ready, and a gateway that went by the status would go on serving it. After
acting, the gateway reports the outcome (``PipelineStatusEvent`` / ``ModelStatusEvent``: the
operation, name, version, uid, its subscriber name as ``stream``, the echoed timestamp, success and
a reason); the scheduler folds these into ``pipelineGwStatus`` / ``modelGwState`` and would show a
gateway that never acks as never ready. The handler returns an ``Ack``; it is sent in the
background, retried up to 5 times with exponential backoff from 100 ms, so a slow scheduler never
holds up the next instruction.

Plain status messages (``operation`` unknown) come from schedulers without gateway acks, or on
streams of non-gateway subscribers (the pipeline gateway following models for ``<name>.model``
calls, and pipeline statuses for ``modelsReady``: a gateway's instruction stream carries no news
when a step model comes or goes). They are read by state, as before, and never acked.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from chainer_api import chainer_pb2, scheduler_pb2, scheduler_pb2_grpc
from dataflow.backoff import doubling_delays, jittered_delay

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
_PSR = scheduler_pb2.PipelineStatusResponse
_MSR = scheduler_pb2.ModelStatusResponse
_PIPELINE_ACK_OP: dict[int, chainer_pb2.PipelineUpdateMessage.PipelineOperation] = {
    _PSR.PipelineCreate: chainer_pb2.PipelineUpdateMessage.Create,
    _PSR.PipelineDelete: chainer_pb2.PipelineUpdateMessage.Delete}
_MODEL_ACK_OP: dict[int, scheduler_pb2.ModelUpdateMessage.ModelOperation] = {
    _MSR.ModelCreate: scheduler_pb2.ModelUpdateMessage.Create,
    _MSR.ModelDelete: scheduler_pb2.ModelUpdateMessage.Delete}
ACK_ATTEMPTS = 5
ACK_BACKOFF_MIN_S, ACK_BACKOFF_MAX_S = 0.1, 3.2
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.2, 5.0
ACK_DRAIN_S = 5.0  # how long a closing stream waits for its acks still in flight


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
    op: int = 0  # ModelStatusResponse.ModelOperation: Create / Delete to act on and ack; 0 for a plain status
    timestamp: int = 0
    keep_topics: bool = False

    @property
    def instruction(self) -> bool:
        return self.op != _MSR.ModelOperationUnknown


@dataclass(frozen=True)
class PipelineEvent:
    name: str
    live: bool  # True: serve it (created/ready); False: deleted
    version: int = 0
    op: int = 0  # PipelineStatusResponse.PipelineOperation: Create / Delete to act on and ack; 0 for a plain status
    uid: str = ""
    timestamp: int = 0
    # what the version's status says besides (not part of what identifies the event):
    models_ready: bool = field(default=True, compare=False)  # the scheduler's modelsReady
    reason: str = field(default="", compare=False)  # the status reason (names the models not ready)
    spec: object = field(default=None, compare=False)  # scheduler_pb2.Pipeline of the version, if sent

    @property
    def instruction(self) -> bool:
        return self.op != _PSR.PipelineOperationUnknown


@dataclass(frozen=True)
class Ack:
    """What a handler reports back for an instruction."""

    success: bool
    reason: str


def model_event(msg) -> ModelEvent:
    """Interpret one ``ModelStatusResponse``: an instruction by its operation; a plain status by
    state (latest version available and not deleted -> serve)."""
    if msg.operation != _MSR.ModelOperationUnknown:
        latest = msg.versions[-1] if msg.versions else None
        endpoint = model_endpoint(latest.modelDefn) if latest is not None and latest.HasField("modelDefn") else None
        return ModelEvent(msg.modelName, msg.operation == _MSR.ModelCreate, endpoint,
                          latest.version if latest is not None else 0, msg.operation, msg.timestamp, msg.keepTopics)
    if msg.deleted or not msg.versions:
        return ModelEvent(msg.modelName, False, None)
    latest = msg.versions[-1]
    endpoint = None
    if latest.HasField("modelDefn"):
        endpoint = model_endpoint(latest.modelDefn)
    available = latest.state.state == _MS.ModelAvailable
    return ModelEvent(msg.modelName, available, endpoint, latest.version)


def pipeline_event(msg) -> PipelineEvent | None:
    """Interpret one ``PipelineStatusResponse``: an instruction by its operation (the status in it
    does not matter); a plain status by the latest version's state. None when nothing is to be done."""
    if msg.operation != _PSR.PipelineOperationUnknown:
        if not msg.versions:  # an instruction names one version; without it there is nothing to ack
            log.warning("pipeline instruction for %s without a version ignored", msg.pipelineName)
            return None
        v = msg.versions[-1]
        return PipelineEvent(msg.pipelineName, msg.operation == _PSR.PipelineCreate, v.state.pipelineVersion,
                             msg.operation, v.pipeline.uid, msg.timestamp, v.state.modelsReady, v.state.reason,
                             _spec(v))
    if not msg.versions:
        return PipelineEvent(msg.pipelineName, False)
    latest = msg.versions[-1]
    status = latest.state.status
    if status in _LIVE_PIPELINE:
        return PipelineEvent(msg.pipelineName, True, latest.state.pipelineVersion,
                             models_ready=latest.state.modelsReady, reason=latest.state.reason, spec=_spec(latest))
    if status in _GONE_PIPELINE:
        return PipelineEvent(msg.pipelineName, False, latest.state.pipelineVersion)
    return None


def _spec(version) -> object | None:
    return version.pipeline if version.HasField("pipeline") else None


def pipeline_ack(ev: PipelineEvent, subscriber: str, ack: Ack) -> chainer_pb2.PipelineUpdateStatusMessage:
    return chainer_pb2.PipelineUpdateStatusMessage(
        update=chainer_pb2.PipelineUpdateMessage(op=_PIPELINE_ACK_OP[ev.op], pipeline=ev.name, version=ev.version,
                                                 uid=ev.uid, stream=subscriber, timestamp=ev.timestamp),
        success=ack.success, reason=ack.reason)


def model_ack(ev: ModelEvent, subscriber: str, ack: Ack) -> scheduler_pb2.ModelUpdateStatusMessage:
    return scheduler_pb2.ModelUpdateStatusMessage(
        update=scheduler_pb2.ModelUpdateMessage(op=_MODEL_ACK_OP[ev.op], model=ev.name, version=ev.version,
                                                stream=subscriber, timestamp=ev.timestamp),
        success=ack.success, reason=ack.reason)


async def _send_ack(send: Callable[[], Awaitable[object]], what: str) -> None:
    for attempt in range(ACK_ATTEMPTS):
        try:
            await send()
            return
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            if attempt == ACK_ATTEMPTS - 1:
                log.error("cannot send %s to the scheduler: %s %s", what, exc.code().name, exc.details())
                return
        await asyncio.sleep(jittered_delay(attempt, ACK_BACKOFF_MIN_S, ACK_BACKOFF_MAX_S))


async def _follow(target: str, open_stream: Callable, handle: Callable[[object], Awaitable | object],
                  stop: asyncio.Event, what: str, ack: Callable | None = None) -> None:
    """Follow one status stream; ``ack(stub, msg, result)``, if given, returns a coroutine sending
    the ack for what ``handle(msg)`` returned, or None when there is nothing to ack."""
    delays = doubling_delays(RECONNECT_MIN_S, RECONNECT_MAX_S)
    while not stop.is_set():
        channel = grpc.aio.insecure_channel(target, options=KEEPALIVE_OPTIONS)
        acks: set[asyncio.Task] = set()
        try:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            call = open_stream(stub)
            async for msg in call:
                delays = doubling_delays(RECONNECT_MIN_S, RECONNECT_MAX_S)  # connected: start again
                res = handle(msg)
                if asyncio.iscoroutine(res):
                    res = await res
                if ack is not None:
                    sending = ack(stub, msg, res)
                    if sending is not None:
                        task = asyncio.create_task(sending)
                        acks.add(task)
                        task.add_done_callback(acks.discard)
                if stop.is_set():
                    break
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            log.warning("scheduler %s stream to %s ended: %s %s", what, target, exc.code().name, exc.details())
        except Exception:
            log.exception("scheduler %s stream handler failed", what)
        finally:
            if acks:  # let acks in flight reach the scheduler before the channel goes
                await asyncio.wait(list(acks), timeout=ACK_DRAIN_S)
            await channel.close()
        try:
            await asyncio.wait_for(stop.wait(), timeout=next(delays))
        except TimeoutError:
            pass


async def follow_models(target: str, subscriber: str, handle: Callable[[ModelEvent], Awaitable | object],
                        stop: asyncio.Event, *, model_gateway: bool = False) -> None:
    """Follow model statuses. ``model_gateway=True``: subscribe as a model gateway, i.e. receive
    Create / Delete instructions and ack each with the ``Ack`` the handler returns."""
    req = scheduler_pb2.ModelSubscriptionRequest(subscriberName=subscriber, isModelGateway=model_gateway)

    def send_ack(stub, msg, result):
        ev = model_event(msg)
        if not ev.instruction or not isinstance(result, Ack):
            return None
        return _send_ack(lambda: stub.ModelStatusEvent(model_ack(ev, subscriber, result)),
                         f"model {ev.name} ack")

    await _follow(target, lambda stub: stub.SubscribeModelStatus(req),
                  lambda msg: handle(model_event(msg)), stop, "model status", send_ack if model_gateway else None)


async def follow_pipelines(target: str, subscriber: str,
                           handle: Callable[[PipelineEvent], Awaitable | object],
                           stop: asyncio.Event) -> None:
    """Follow pipeline statuses as a pipeline gateway: instructions are acked with the handler's ``Ack``.

    ``POD_IP`` goes along as ``subscriberIp``, as the reference gateway sends it: a Seldon scheduler
    routes a pipeline's traffic (Envoy) to the addresses of the gateways that acked it Ready."""
    req = scheduler_pb2.PipelineSubscriptionRequest(subscriberName=subscriber, isPipelineGateway=True,
                                                    subscriberIp=os.environ.get("POD_IP", ""))

    def on_msg(msg):
        ev = pipeline_event(msg)
        return handle(ev) if ev is not None else None

    def send_ack(stub, msg, result):
        ev = pipeline_event(msg)
        if ev is None or not ev.instruction or not isinstance(result, Ack):
            return None
        return _send_ack(lambda: stub.PipelineStatusEvent(pipeline_ack(ev, subscriber, result)),
                         f"pipeline {ev.name} ack")

    await _follow(target, lambda stub: stub.SubscribePipelineStatus(req), on_msg, stop, "pipeline status", send_ack)


async def follow_pipeline_states(target: str, subscriber: str,
                                 handle: Callable[[PipelineEvent], Awaitable | object],
                                 stop: asyncio.Event) -> None:
    """Follow every pipeline status change as a plain (non-gateway) subscriber, never acked: what
    changes without an instruction, such as ``modelsReady`` when a step model is loaded later."""
    req = scheduler_pb2.PipelineSubscriptionRequest(subscriberName=subscriber)

    def on_msg(msg):
        ev = pipeline_event(msg)
        return handle(ev) if ev is not None else None

    await _follow(target, lambda stub: stub.SubscribePipelineStatus(req), on_msg, stop, "pipeline state")
