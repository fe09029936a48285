"""The engine's side of the Chainer gRPC service (subscribe, receive updates, ack them).

``ChainerClient.run`` keeps a ``SubscribePipelineUpdates`` stream open forever, reconnecting with
binary exponential backoff (50 ms .. 5 s) and hands every message to a callback. ``ack`` sends
one ``PipelineUpdateEvent`` with full-jitter retries (100 .. 3200 ms, 5 attempts).

Keepalive pings every 60 s with a 2 s timeout and never without an active call: the Go
scheduler enforces a 60 s minimum and closes connections that ping more often (too_many_pings).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import grpc

from chainer_api import chainer_pb2, chainer_pb2_grpc
from dataflow.backoff import doubling_delays, jittered_delay

log = logging.getLogger(__name__)

KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 2_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)

RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 5.0
ACK_ATTEMPTS = 5
ACK_BACKOFF_MIN_S = 0.1
ACK_BACKOFF_MAX_S = 3.2
ACK_TIMEOUT_S = 5.0

OnMessage = Callable[[chainer_pb2.PipelineUpdateMessage], None]
Op = chainer_pb2.PipelineUpdateMessage.PipelineOperation


def reconnect_delays() -> Iterator[float]:
    """50 ms, 100 ms, 200 ms ... capped at 5 s (binary exponential, as the reference)."""
    return doubling_delays(RECONNECT_MIN_S, RECONNECT_MAX_S)


def ack_delay(attempt: int) -> float:
    """Between 100 ms and 3.2 s, growing with the attempt."""
    return jittered_delay(attempt, ACK_BACKOFF_MIN_S, ACK_BACKOFF_MAX_S)


def status_message(answered: chainer_pb2.PipelineUpdateMessage, op: Op, stream: str, success: bool,
                   reason: str) -> chainer_pb2.PipelineUpdateStatusMessage:
    """The ack the scheduler expects: identity + the answered message's timestamp."""
    update = chainer_pb2.PipelineUpdateMessage(
        op=op, pipeline=answered.pipeline, version=answered.version, uid=answered.uid,
        timestamp=answered.timestamp, stream=stream)
    return chainer_pb2.PipelineUpdateStatusMessage(update=update, success=success, reason=reason)


class ChainerClient:
    def __init__(self, target: str, replica_name: str):
        self.target = target
        self.replica_name = replica_name
        self.connected = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._stub: chainer_pb2_grpc.ChainerStub | None = None

    def _ensure_channel(self) -> chainer_pb2_grpc.ChainerStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=list(KEEPALIVE_OPTIONS))
            self._stub = chainer_pb2_grpc.ChainerStub(self._channel)
        return self._stub

    async def run(self, on_message: OnMessage) -> None:
        """Subscribe forever (until cancelled); every received message goes to ``on_message``."""
        stub = self._ensure_channel()
        request = chainer_pb2.PipelineSubscriptionRequest(name=self.replica_name)
        delays = reconnect_delays()
        failures = 0
        while True:
            call = stub.SubscribePipelineUpdates(request)
            try:
                await call.wait_for_connection()
                self.connected.set()
                delays = reconnect_delays()  # connected: the next failure starts again at 50 ms
                failures = 0
                log.info("subscribed to scheduler %s as %s", self.target, self.replica_name)
                async for msg in call:
                    on_message(msg)
                log.warning("scheduler %s closed the pipeline update stream", self.target)
            except asyncio.CancelledError:
                call.cancel()
                raise
            except grpc.aio.AioRpcError as exc:
                delay = next(delays)
                # warn on the first failure after a connection, then once per minute-ish at the cap
                level = logging.WARNING if delay in (RECONNECT_MIN_S,) or failures % 12 == 0 else logging.DEBUG
                log.log(level, "pipeline update stream from %s failed (%s %s); retrying", self.target,
                        exc.code().name, exc.details())
                failures += 1
                await asyncio.sleep(delay)
                continue
            finally:
                self.connected.clear()
            failures = 0
            await asyncio.sleep(next(delays))

    async def ack(self, answered: chainer_pb2.PipelineUpdateMessage, op: Op, success: bool,
                  reason: str) -> bool:
        """Send one status update; True once the scheduler accepted it."""
        stub = self._ensure_channel()
        message = status_message(answered, op, self.replica_name, success, reason)
        for attempt in range(ACK_ATTEMPTS):
            try:
                await stub.PipelineUpdateEvent(message, timeout=ACK_TIMEOUT_S)
                return True
            except grpc.aio.AioRpcError as exc:
                log.warning("ack %s %s v%d (%s) attempt %d failed: %s", op_name(op), answered.pipeline,
                            answered.version, answered.uid, attempt + 1, exc.code().name)
                if attempt + 1 < ACK_ATTEMPTS:
                    await asyncio.sleep(ack_delay(attempt))
        log.error("giving up acking %s for pipeline %s (%s)", op_name(op), answered.pipeline, answered.uid)
        return False

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None


def op_name(op: int) -> str:
    return chainer_pb2.PipelineUpdateMessage.PipelineOperation.Name(op)
