"""Run a model gateway: models from the scheduler's model status stream and/or a static list."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from dataflow.kafka import KafkaSettings, TopicNamer
from dataflow.schema_registry import framer_for

from gateways import scheduler_watch
from gateways.model_gateway import DEFAULT_TIMEOUT_S, DEFAULT_WORKERS, ModelGateway
from gateways.service import GatewayService, subscriber_name

log = logging.getLogger(__name__)


@dataclass
class ModelGatewayConfig:
    settings: KafkaSettings
    namer: TopicNamer = TopicNamer()
    scheduler: str | None = None  # host:port of the scheduler gRPC service
    static_models: dict[str, str] = field(default_factory=dict)  # name -> endpoint, served from start
    default_endpoint: str | None = None  # for scheduler models whose definition carries no endpoint
    workers: int = DEFAULT_WORKERS
    timeout_s: float = DEFAULT_TIMEOUT_S
    partitions: int = 1
    replication: int = 1
    consumer_prefix: str = ""
    model_version: str = ""
    subscriber: str = ""
    schema_registry_config: str | None = None  # .confluent-schema.yaml or its directory; None: raw values


class ModelGatewayService(GatewayService):
    def __init__(self, config: ModelGatewayConfig) -> None:
        super().__init__()
        self.config = config
        self.gateway = ModelGateway(config.settings, config.namer, consumer_prefix=config.consumer_prefix,
                                    workers=config.workers, timeout_s=config.timeout_s,
                                    partitions=config.partitions, replication=config.replication,
                                    model_version=config.model_version,
                                    framer=framer_for(config.schema_registry_config))

    async def start(self) -> "ModelGatewayService":
        c = self.config
        await self.gateway.start()
        for name, endpoint in c.static_models.items():
            await self.gateway.add_model(name, endpoint)
        if c.scheduler:
            self._follow(scheduler_watch.follow_models, c.scheduler,
                         subscriber_name(c.subscriber, "dataflow-modelgateway"), self._on_model)
        return self

    async def _on_model(self, ev: scheduler_watch.ModelEvent) -> None:
        if ev.name in self.config.static_models:
            return
        if ev.available:
            endpoint = ev.endpoint or self.config.default_endpoint
            if not endpoint:
                log.error("model %s has no OIP endpoint (and no --default-endpoint): not served", ev.name)
                return
            try:
                await self.gateway.add_model(ev.name, endpoint)
            except Exception:  # noqa: BLE001 - one bad model must not stop the others
                log.exception("cannot serve model %s", ev.name)
        else:
            await self.gateway.remove_model(ev.name)
