"""Test helpers: a fake dataflow engine that subscribes to the Chainer API and acks every update.

Used by our integration tests and handy for anyone who needs a pipeline to reach PipelineReady
without a real engine.
"""
from __future__ import annotations

import threading
from typing import Any

import grpc

from chainer_api import chainer_pb2, chainer_pb2_grpc


class FakeEngine:
    """Subscribes as ``name``; records every message; acks Create/Delete with ``succeed``."""

    def __init__(self, address: str, name: str, succeed: bool = True, auto_ack: bool = True) -> None:
        self.address = address
        self.name = name
        self.succeed = succeed
        self.auto_ack = auto_ack
        self.messages: list[chainer_pb2.PipelineUpdateMessage] = []
        self.running: dict[str, chainer_pb2.PipelineUpdateMessage] = {}  # uid -> Create
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(address)
        self._stub = chainer_pb2_grpc.ChainerStub(self._channel)
        self._call: Any = None  # the subscription's streaming call (untyped gRPC stub), once _run opens it
        self._thread = threading.Thread(target=self._run, name=f"fake-engine-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._call = self._stub.SubscribePipelineUpdates(chainer_pb2.PipelineSubscriptionRequest(name=self.name))
        try:
            for msg in self._call:
                with self._lock:
                    self.messages.append(msg)
                    if msg.op == chainer_pb2.PipelineUpdateMessage.Create:
                        self.running[msg.uid] = msg
                    elif msg.op == chainer_pb2.PipelineUpdateMessage.Delete:
                        self.running.pop(msg.uid, None)
                if self.auto_ack:
                    self.ack(msg, self.succeed)
        except grpc.RpcError:
            pass

    def ack(self, msg, success: bool = True, reason: str = "", op=None) -> None:
        update = chainer_pb2.PipelineUpdateMessage()
        update.CopyFrom(msg)
        del update.updates[:]
        update.stream = self.name
        if op is not None:
            update.op = op
        if not reason:
            reason = "pipeline data streams: ready" if success else "kafka streams topic creation error"
        self._stub.PipelineUpdateEvent(chainer_pb2.PipelineUpdateStatusMessage(
            update=update, success=success, reason=reason), timeout=5)

    def ops(self, pipeline: str | None = None) -> list[tuple[str, int]]:
        with self._lock:
            return [(chainer_pb2.PipelineUpdateMessage.PipelineOperation.Name(m.op), m.version)
                    for m in self.messages if pipeline is None or m.pipeline == pipeline]

    def running_pipelines(self) -> set[str]:
        with self._lock:
            return {m.pipeline for m in self.running.values()}

    def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        self._channel.close()
        self._thread.join(5)

