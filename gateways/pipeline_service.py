"""Run a whole pipeline gateway: core + REST + gRPC + metrics + the scheduler's status streams.

With a scheduler the gateway serves exactly what the scheduler knows: pipelines from its pipeline
status stream, and (for ``<name>.model`` calls) models its model status stream reports available.
Without one (``scheduler=None``) it serves whatever has an output topic in Kafka.

Pipelines follow the scheduler's instructions (Create: serve, Delete: stop serving), each acked
with its outcome so the scheduler can report the pipeline's gateway readiness (``scheduler_watch``).
A second, plain pipeline status stream brings what changes without an instruction: a pipeline's
``modelsReady`` (its ready endpoints answer not-ready while a step model is missing). Both bring
the pipeline's spec, from which its default request timeout is derived.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
from aiohttp import web

from dataflow.kafka import KafkaSettings, TopicNamer
from dataflow.schema_registry import framer_for
from gateways import pipeline_grpc, pipeline_http, pipeline_timeouts, scheduler_watch
from gateways.model_metadata import ModelMetadataCache
from gateways.pipeline_gateway import DEFAULT_TIMEOUT_S, MAX_NUM_CONSUMERS, MAX_REQUEST_BYTES, PipelineGateway
from gateways.service import GatewayService, subscriber_name

log = logging.getLogger(__name__)


@dataclass
class PipelineGatewayConfig:
    settings: KafkaSettings
    namer: TopicNamer = field(default_factory=TopicNamer)
    scheduler: str | None = None  # host:port; None -> pipelines load on first request
    http_port: int = 9010
    grpc_port: int = 9011
    host: str = "0.0.0.0"
    metrics_port: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    consumer_prefix: str = ""
    subscriber: str = ""
    max_num_consumers: int = MAX_NUM_CONSUMERS  # group buckets; must match the other replicas
    schema_registry_config: str | None = None  # .confluent-schema.yaml or its directory; None: raw values
    max_request_bytes: int = MAX_REQUEST_BYTES  # REST 413 / gRPC RESOURCE_EXHAUSTED past it
    # what a pipeline's default timeout is derived from (see pipeline_timeouts); timeout_s is its floor
    model_timeout_s: float = pipeline_timeouts.MODEL_TIMEOUT_S
    default_join_window_ms: int = pipeline_timeouts.DEFAULT_JOIN_WINDOW_MS


class PipelineGatewayService(GatewayService):
    """Owns the running pieces; ``await start()`` then ``await stop()``."""

    gateway: PipelineGateway

    def __init__(self, config: PipelineGatewayConfig) -> None:
        super().__init__()
        self.config = config
        self.gateway = PipelineGateway(config.settings, config.namer, consumer_prefix=config.consumer_prefix,
                                       timeout_s=config.timeout_s, max_num_consumers=config.max_num_consumers,
                                       lazy_pipelines=config.scheduler is None,
                                       framer=framer_for(config.schema_registry_config),
                                       max_request_bytes=config.max_request_bytes)
        self.gateway.model_timeout_s = config.model_timeout_s
        self.gateway.default_join_window_ms = config.default_join_window_ms
        if config.scheduler:  # model servers are known from the scheduler's model statuses
            self.gateway.model_metadata = ModelMetadataCache()
        self._http: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self._metrics = None

    async def start(self) -> PipelineGatewayService:
        c = self.config
        await self.gateway.start()
        self._http = await pipeline_http.serve(self.gateway, c.http_port, c.host)
        self._grpc = await pipeline_grpc.serve(self.gateway, c.grpc_port, c.host)
        if c.metrics_port:
            self._metrics = self.gateway.metrics.serve(c.metrics_port)
        if c.scheduler:
            name = subscriber_name(c.subscriber, "dataflow-pipelinegateway")
            self._follow(scheduler_watch.follow_pipelines, c.scheduler, name, self._on_pipeline)
            self._follow(scheduler_watch.follow_models, c.scheduler, name, self._on_model)
            self._follow(scheduler_watch.follow_pipeline_states, c.scheduler, f"{name}-status",
                         self._on_pipeline_state)
        return self

    def _on_pipeline_state(self, ev: scheduler_watch.PipelineEvent) -> None:
        """A plain status of a pipeline: keep its models' readiness and spec current (serving it or
        not is the instructions' business). Kept also before the pipeline's Create instruction
        arrives: this stream may be ahead of the instruction stream."""
        if not ev.live:
            return
        self.gateway.set_models_ready(ev.name, ev.version, ev.models_ready, ev.reason)
        if ev.spec is not None:
            self.gateway.set_pipeline_spec(ev.name, ev.spec)

    def _on_model(self, ev: scheduler_watch.ModelEvent) -> None:
        if self.gateway.model_metadata is not None:
            self.gateway.model_metadata.set_endpoint(ev.name, ev.endpoint if ev.available else None)
        if ev.available:
            self.gateway.add_model(ev.name)
        else:
            self.gateway.remove_model(ev.name)

    def _on_pipeline(self, ev: scheduler_watch.PipelineEvent) -> scheduler_watch.Ack:
        """Serve or stop serving ``ev.name``; the returned ``Ack`` is sent for instructions."""
        if ev.live:
            try:
                self.gateway.load_pipeline(ev.name, ev.version)
                self.gateway.set_models_ready(ev.name, ev.version, ev.models_ready, ev.reason,
                                              only_if_unknown=True)
                if ev.spec is not None:
                    self.gateway.set_pipeline_spec(ev.name, ev.spec)
            except Exception as exc:
                log.exception("cannot serve pipeline %s", ev.name)
                return scheduler_watch.Ack(False, f"Failed to load/store pipeline {ev.name}: {exc}")
            log.info("serving pipeline %s v%d", ev.name, ev.version)
            return scheduler_watch.Ack(True, f"Pipeline {ev.name} loaded")
        try:
            self.gateway.unload_pipeline(ev.name)
        except Exception as exc:
            log.exception("cannot stop serving pipeline %s", ev.name)
            return scheduler_watch.Ack(False, f"Failed to delete pipeline {ev.name}: {exc}")
        log.info("dropping pipeline %s", ev.name)
        return scheduler_watch.Ack(True, f"Pipeline {ev.name} deleted")

    async def _close_servers(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=1)
        if self._http is not None:
            await self._http.cleanup()
        if self._metrics is not None:
            server, _thread = self._metrics
            server.shutdown()
