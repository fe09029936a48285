"""Run a model gateway: models from the scheduler's model status stream and/or a static list.

The gateway subscribes as a model gateway: the scheduler sends it Create / Delete instructions and
it acks each with the outcome (``scheduler_watch``), which the scheduler reports as the model's
``modelGwState``. Static models are served from start whatever the scheduler says.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from dataflow.kafka import KafkaSettings, TopicNamer
from dataflow.schema_registry import framer_for
from gateways import scheduler_watch
from gateways.model_gateway import DEFAULT_BATCHING, DEFAULT_MAX_BATCH, DEFAULT_TIMEOUT_S, DEFAULT_WORKERS, ModelGateway
from gateways.service import GatewayService, subscriber_name

log = logging.getLogger(__name__)


@dataclass
class ModelGatewayConfig:
    settings: KafkaSettings
    namer: TopicNamer = field(default_factory=TopicNamer)
    scheduler: str | None = None  # host:port of the scheduler gRPC service
    static_models: dict[str, str] = field(default_factory=dict)  # name -> endpoint, served from start
    default_endpoint: str | None = None  # for scheduler models whose definition carries no endpoint
    workers: int = DEFAULT_WORKERS
    max_batch: int = DEFAULT_MAX_BATCH  # records per call at most for a batched model (1: none)
    batching: str = DEFAULT_BATCHING  # which models are batched: auto (declared batch dimension), always, off
    timeout_s: float = DEFAULT_TIMEOUT_S
    partitions: int = 1
    replication: int = 1
    consumer_prefix: str = ""
    model_version: str = ""
    subscriber: str = ""
    schema_registry_config: str | None = None  # .confluent-schema.yaml or its directory; None: raw values
    metrics_port: int | None = None  # serve Prometheus /metrics (per-model calls, latency, in flight)


class ModelGatewayService(GatewayService):
    gateway: ModelGateway

    def __init__(self, config: ModelGatewayConfig) -> None:
        super().__init__()
        self.config = config
        self.gateway = ModelGateway(config.settings, config.namer, consumer_prefix=config.consumer_prefix,
                                    workers=config.workers, max_batch=config.max_batch,
                                    batching=config.batching,
                                    timeout_s=config.timeout_s,
                                    partitions=config.partitions, replication=config.replication,
                                    model_version=config.model_version,
                                    framer=framer_for(config.schema_registry_config))
        self._metrics = None

    async def start(self) -> ModelGatewayService:
        c = self.config
        await self.gateway.start()
        if c.metrics_port:
            self._metrics = self.gateway.metrics.serve(c.metrics_port)
        for name, endpoint in c.static_models.items():
            await self.gateway.add_model(name, endpoint)
        if c.scheduler:
            name = subscriber_name(c.subscriber, "dataflow-modelgateway")
            self._follow(scheduler_watch.follow_models, c.scheduler, name, self._on_model, model_gateway=True)
        return self

    async def _close_servers(self) -> None:
        await super()._close_servers()
        if self._metrics is not None:
            server, _thread = self._metrics
            server.shutdown()

    async def _on_model(self, ev: scheduler_watch.ModelEvent) -> scheduler_watch.Ack:
        """Serve or stop serving ``ev.name``; the returned ``Ack`` is sent for instructions."""
        Ack = scheduler_watch.Ack
        if ev.name in self.config.static_models:
            return Ack(True, f"Model {ev.name} is served from the static model list")
        if ev.available:
            endpoint = ev.endpoint or self.config.default_endpoint
            if not endpoint:
                log.error("model %s has no OIP endpoint (and no --default-endpoint): not served", ev.name)
                return Ack(False, f"Failed to add model {ev.name}: no OIP endpoint in its definition")
            if self.gateway.models().get(ev.name) == endpoint:
                return Ack(True, f"Model consumer {ev.name} already exists")
            try:
                await self.gateway.add_model(ev.name, endpoint)
            except Exception as exc:
                log.exception("cannot serve model %s", ev.name)
                return Ack(False, f"Failed to add model {ev.name}: {exc}")
            return Ack(True, f"Model {ev.name} added")
        try:
            await self.gateway.remove_model(ev.name)
        except Exception as exc:
            log.exception("cannot stop serving model %s", ev.name)
            return Ack(False, f"Failed to remove model {ev.name}: {exc}")
        return Ack(True, f"Model {ev.name} removed")
