"""Run the minimal scheduler: the Scheduler API on one port, the Chainer API on another.

``SchedulerApp`` owns one asyncio loop's worth of state (store, services, two grpc.aio servers).
``run_in_thread`` starts it on a private loop in a daemon thread (tests, embedding).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import grpc

from chainer_api import chainer_pb2_grpc, scheduler_pb2_grpc
from dataflow.kafka import TopicNamer
from scheduler_min.chainer_server import ChainerService
from scheduler_min.health import health_handler
from scheduler_min.scheduler_server import SchedulerService
from scheduler_min.store import Store

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER_PORT = 9004
DEFAULT_CHAINER_PORT = 9008
# The reference enforces a 60 s minimum ping interval; we accept pings as often as every 10 s
# so both Go-style and eager Python clients stay connected.
_SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a port already taken (say, a second scheduler) must fail, not be shared
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass
class SchedulerConfig:
    port: int = DEFAULT_SCHEDULER_PORT
    chainer_port: int = DEFAULT_CHAINER_PORT
    host: str = "0.0.0.0"
    state_dir: str | None = None
    topic_prefix: str = "seldon"
    namespace: str = "default"
    max_shard_count_multiplier: int = 1
    default_model_endpoint: str | None = None
    retry_failed_secs: float = 60.0   # re-send failed creates/deletes this often...
    max_retry_failed: int = 10        # ...at most this many times per version


def _bind(server: grpc.aio.Server, host: str, port: int) -> int:
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc}") from None
    if not bound:
        raise OSError(f"cannot listen on {host}:{port} (port in use?)")
    return bound


class SchedulerApp:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.namer = TopicNamer(prefix=config.topic_prefix, namespace=config.namespace)
        self.store: Store | None = None
        self.chainer: ChainerService | None = None
        self.scheduler: SchedulerService | None = None
        self._servers: list[grpc.aio.Server] = []
        self._retry_task: asyncio.Task | None = None
        self.port = 0
        self.chainer_port = 0

    async def start(self) -> SchedulerApp:
        c = self.config
        self.store = Store(c.state_dir)
        self.chainer = ChainerService(self.store, self.namer, c.max_shard_count_multiplier)
        self.scheduler = SchedulerService(self.store, self.chainer, c.default_model_endpoint)
        sched = grpc.aio.server(options=_SERVER_OPTIONS)
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(self.scheduler, sched)
        sched.add_generic_rpc_handlers((health_handler(),))
        self.port = _bind(sched, c.host, c.port)
        chain = grpc.aio.server(options=_SERVER_OPTIONS)
        chainer_pb2_grpc.add_ChainerServicer_to_server(self.chainer, chain)
        chain.add_generic_rpc_handlers((health_handler(),))
        self.chainer_port = _bind(chain, c.host, c.chainer_port)
        self._servers = [sched, chain]
        for s in self._servers:
            await s.start()
        # Restored pipelines: with no engine connected yet they go back to PipelineCreate and
        # are re-sent as engines subscribe.
        self.chainer.rebalance()
        # Likewise for gateways: none is connected yet, so terminations complete and the rest
        # wait (with a reason saying why) until gateways subscribe.
        self.scheduler.pipeline_gateways.rebalance()
        self.scheduler.model_gateways.rebalance()
        if c.retry_failed_secs > 0:
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_loop())
        log.info("scheduler listening on %s (scheduler) and %s (chainer)", self.port, self.chainer_port)
        return self

    async def _retry_loop(self) -> None:
        assert self.chainer is not None and self.scheduler is not None  # started by start()
        while True:
            await asyncio.sleep(self.config.retry_failed_secs)
            try:
                self.chainer.retry_failed(self.config.max_retry_failed)
                self.scheduler.pipeline_gateways.retry_failed(self.config.max_retry_failed)
            except Exception:  # keep the poller alive whatever one round hit
                log.exception("retrying failed pipelines")

    async def stop(self, grace: float = 1.0) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            self._retry_task = None
        if self.chainer:
            self.chainer.close_streams()
        if self.scheduler:
            self.scheduler.close()
        await asyncio.gather(*(s.stop(grace) for s in self._servers))
        self._servers = []

    async def wait(self) -> None:
        await asyncio.gather(*(s.wait_for_termination() for s in self._servers))


class ThreadedScheduler:
    """A ``SchedulerApp`` on its own loop in a daemon thread; ``stop()`` shuts it down."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = SchedulerApp(config)
        self._thread = threading.Thread(target=self.loop.run_forever, name="scheduler", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.app.start(), self.loop).result(10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    @property
    def chainer_address(self) -> str:
        return f"127.0.0.1:{self.app.chainer_port}"

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the scheduler loop (to read state safely) and return its result."""
        async def _run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(_run(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.app.stop(0.2), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def run_in_thread(config: SchedulerConfig) -> ThreadedScheduler:
    return ThreadedScheduler(config)


async def serve(config: SchedulerConfig, ready=None) -> None:
    """Run until cancelled (SIGINT/SIGTERM handled by the caller)."""
    app = await SchedulerApp(config).start()
    if ready:
        ready(app)
    try:
        await app.wait()
    finally:
        await app.stop()
