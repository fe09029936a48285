"""An in-process stand-in for the scheduler's Chainer service, for tests and demos.

It behaves like the reference where it matters to an engine: remembers the Creates it
was told to send and resends them to every (re)subscribing engine, pushes Deletes to connected
engines, and records every ``PipelineUpdateEvent`` ack. A plain threaded gRPC server, so sync
test code and asyncio engines can both use it.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc

from chainer_api import chainer_pb2, chainer_pb2_grpc

Msg = chainer_pb2.PipelineUpdateMessage
Ack = chainer_pb2.PipelineUpdateStatusMessage


class FakeChainer(chainer_pb2_grpc.ChainerServicer):
    def __init__(self, resend_on_subscribe: bool = True):
        self.resend_on_subscribe = resend_on_subscribe
        self.acks: list[Ack] = []
        self.subscriptions: list[str] = []       # every subscribe, in order (names repeat on reconnect)
        self._streams: dict[str, list[queue.Queue]] = {}
        self._creates: dict[str, Msg] = {}       # uid -> latest Create, resent on subscribe
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None
        self.port: int | None = None

    # ------------------------------------------------------------ gRPC side

    def SubscribePipelineUpdates(self, request, context):
        q: queue.Queue = queue.Queue()
        with self._cond:
            self._streams.setdefault(request.name, []).append(q)
            self.subscriptions.append(request.name)
            if self.resend_on_subscribe:
                for msg in self._creates.values():
                    q.put(msg)
            self._cond.notify_all()
        try:
            while context.is_active():
                try:
                    msg = q.get(timeout=0.1)
                except queue.Empty:
                    continue
                if msg is None:
                    return
                yield msg
        finally:
            with self._cond:
                self._streams.get(request.name, []).remove(q)
                self._cond.notify_all()

    def PipelineUpdateEvent(self, request, context):
        with self._cond:
            self.acks.append(request)
            self._cond.notify_all()
        return chainer_pb2.PipelineUpdateStatusResponse()

    # ------------------------------------------------------------ test side

    def start(self, port: int = 0, host: str = "127.0.0.1") -> FakeChainer:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        chainer_pb2_grpc.add_ChainerServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self._server.start()
        self.target = f"{host}:{self.port}"
        return self

    def stop(self) -> None:
        with self._cond:
            for qs in self._streams.values():
                for q in qs:
                    q.put(None)
        if self._server is not None:
            self._server.stop(grace=0.5).wait()
            self._server = None

    def send(self, msg: Msg, to: str | None = None) -> None:
        """Push to connected engines (all, or only ``to``); Creates are also remembered for resend."""
        with self._cond:
            if msg.op == Msg.Create:
                self._creates[msg.uid] = msg
            elif msg.op == Msg.Delete:
                self._creates.pop(msg.uid, None)
            for name, qs in self._streams.items():
                if to is None or name == to:
                    for q in qs:
                        q.put(msg)

    def disconnect(self, name: str) -> None:
        """End the engine's stream (it must reconnect)."""
        with self._cond:
            for q in self._streams.get(name, []):
                q.put(None)

    def wait_subscribed(self, name: str | None = None, timeout_s: float = 30.0, count: int = 1) -> None:
        def ok():
            return sum(1 for n in self.subscriptions if name is None or n == name) >= count and (
                any(self._streams.values()) if name is None else bool(self._streams.get(name)))
        self._wait(ok, timeout_s, f"no subscription from {name or 'any engine'}")

    def wait_ack(self, match: Callable[[Ack], bool], timeout_s: float = 30.0) -> Ack:
        found: list[Ack] = []

        def ok():
            found[:] = [a for a in self.acks if match(a)]
            return bool(found)
        self._wait(ok, timeout_s, "no matching ack")
        return found[0]

    def acks_for(self, uid: str, op: int | None = None) -> list[Ack]:
        with self._cond:
            return [a for a in self.acks if a.update.uid == uid and (op is None or a.update.op == op)]

    def _wait(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{what} within {timeout_s}s; acks so far: "
                                       f"{[(a.update.op, a.update.uid, a.success, a.reason) for a in self.acks]}")
                self._cond.wait(min(left, 0.1))


def ack_for(uid: str, op: int, timestamp: int | None = None) -> Callable[[Ack], bool]:
    return lambda a: a.update.uid == uid and a.update.op == op and (
        timestamp is None or a.update.timestamp == timestamp)
