"""The engine process: Chainer subscription -> PipelineManager -> runners, until stopped."""
from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Any

from chainer_api import chainer_pb2
from dataflow.engine.chainer_client import ChainerClient
from dataflow.engine.config import EngineConfig
from dataflow.engine.lifecycle import PipelineManager, RunnerFactory
from dataflow.runtime.base import PipelineRunner, RuntimeConfig, StateCallback

log = logging.getLogger(__name__)


def load_callable(spec: str) -> Callable[..., Any]:
    """``"package.module:name"`` -> the object."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected MODULE:CALLABLE, got {spec!r}")
    obj: Any = importlib.import_module(module)  # then an attribute of it, named at run time
    for part in attr.split("."):
        obj = getattr(obj, part)
    found: Callable[..., Any] = obj
    return found


def make_runner_factory(config: EngineConfig) -> RunnerFactory:
    """Runner class for ``config.runtime``; import errors surface at engine start, not per pipeline."""
    if config.runtime == "kafka":
        # imported here: the CLI loads this package for its flags, and a runtime adds ~150 ms to every command
        from dataflow.runtime.kafka_runtime import KafkaRunner

        pipeline_factory = load_callable(config.pipeline_factory) if config.pipeline_factory else None

        def kafka_runner(msg: chainer_pb2.PipelineUpdateMessage, rc: RuntimeConfig,
                         on_state: StateCallback) -> PipelineRunner:
            return KafkaRunner(msg, rc, on_state, pipeline_factory=pipeline_factory)
        return kafka_runner
    # imported here: the CLI loads this package for its flags, and a runtime adds ~150 ms to every command
    from dataflow.runtime.faust_runtime import FaustRunner

    return lambda msg, rc, on_state: FaustRunner(msg, rc, on_state)


class Engine:
    def __init__(self, config: EngineConfig, runner_factory: RunnerFactory | None = None):
        self.config = config
        self.client = ChainerClient(config.scheduler_target, config.replica_name)
        self._runner_factory = runner_factory or make_runner_factory(config)
        self.manager: PipelineManager | None = None
        self._stop = asyncio.Event()
        self._started = False

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Serve until ``request_stop()``; then stop every pipeline cleanly."""
        self.manager = PipelineManager(self.config.runtime_config(), self._runner_factory, self.client.ack,
                                       parallelism=self.config.ctlops_parallelism)
        health = None
        if self.config.health_port is not None:
            # imported here: health and metrics add ~300 ms to every `dataflow` command (the CLI loads this package)
            from dataflow.engine.health import start_health_server
            from dataflow.engine.metrics import engine_registry

            manager = self.manager
            registry = engine_registry(lambda: [r.runner for r in list(manager.running.values())])
            health = await start_health_server(self.config.health_port,
                                               ready=self.client.connected.is_set,
                                               started=lambda: self._started, registry=registry)
        subscription = asyncio.create_task(self.client.run(self.manager.submit), name="chainer-subscription")
        self._started = True
        log.info("dataflow engine %s started (runtime %s, scheduler %s)", self.config.replica_name,
                 self.config.runtime, self.config.scheduler_target)
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait({subscription, stop}, return_when=asyncio.FIRST_COMPLETED)
            if subscription in done:
                subscription.result()  # surfaces an unexpected crash of the subscription loop
        finally:
            stop.cancel()
            subscription.cancel()
            await asyncio.gather(subscription, return_exceptions=True)
            await self.manager.stop_all()
            await self.client.close()
            if health is not None:
                await health.cleanup()
            log.info("dataflow engine %s stopped", self.config.replica_name)
