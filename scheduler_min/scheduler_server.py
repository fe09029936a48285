"""The subset of ``seldon.mlops.scheduler.Scheduler`` a dataflow deployment needs.

Pipelines: LoadPipeline, UnloadPipeline, PipelineStatus, SubscribePipelineStatus. Models:
LoadModel, UnloadModel, ModelStatus, SubscribeModelStatus. Gateway acks: PipelineStatusEvent,
ModelStatusEvent (see ``gateway_acks``). Plus SchedulerStatus, and for the Seldon operator
SubscribeControlPlane and ServerNotify. Every other method keeps the generated servicer's
UNIMPLEMENTED answer.

Status streams have two kinds of subscribers. Gateways (``isPipelineGateway`` / ``isModelGateway``)
get only Create / Delete instructions from ``gateway_acks``; everyone else gets every status change,
gateway statuses included, and no instructions (a CLI or operator must not be mistaken for a
gateway that never acks).
"""
from __future__ import annotations

import asyncio
import logging

import grpc

from chainer_api import chainer_pb2, scheduler_pb2, scheduler_pb2_grpc
from dataflow import __version__
from scheduler_min.chainer_server import ChainerService
from scheduler_min.gateway_acks import ModelGateways, PipelineGateways
from scheduler_min.models import ModelDefinitionError, resolve_endpoint
from scheduler_min.store import ConflictError, NotFoundError, PipelineRecord, Store
from scheduler_min.validation import PipelineValidationError, check_topic_names

log = logging.getLogger(__name__)


class _Subscribers:
    """Open status streams; each gets every update through its own queue."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue] = set()

    def publish(self, item) -> None:
        for q in list(self.queues):
            q.put_nowait(item)

    def close(self) -> None:
        self.publish(None)

    async def stream(self, initial):
        q: asyncio.Queue = asyncio.Queue()
        self.queues.add(q)
        try:
            for item in initial:
                yield item
            while True:
                item = await q.get()
                if item is None:
                    return
                yield item
        finally:
            self.queues.discard(q)


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, store: Store, chainer: ChainerService, default_model_endpoint: str | None = None) -> None:
        self.store = store
        self.chainer = chainer
        self.default_model_endpoint = default_model_endpoint
        self.pipeline_subscribers = _Subscribers()
        self.model_subscribers = _Subscribers()
        self.control_plane_subscribers = _Subscribers()
        self.pipeline_gateways = PipelineGateways(store)
        self.model_gateways = ModelGateways(store)
        store.pipeline_listeners.append(self._pipeline_changed)
        store.model_listeners.append(self._model_changed)

    def _pipeline_changed(self, record: PipelineRecord) -> None:
        """Publish the changed version; when it is not the latest (an old version terminating
        during an upgrade), the latest follows it, so ``versions[-1]`` is always the live state."""
        versions = [self.store.with_state(record)]
        latest = self.store.pipelines.get(record.name, [record])[-1]
        if latest is not record:
            versions.append(self.store.with_state(latest))
        self.pipeline_subscribers.publish(scheduler_pb2.PipelineStatusResponse(
            pipelineName=record.name, versions=versions))

    def _model_changed(self, name: str) -> None:
        self.model_subscribers.publish(self.store.model_status(name))
        # a model change can flip modelsReady of pipelines using it
        for versions in self.store.pipelines.values():
            latest = versions[-1]
            if name in latest.pv.steps:
                self._pipeline_changed(latest)

    def close(self) -> None:
        self.pipeline_subscribers.close()
        self.model_subscribers.close()
        self.control_plane_subscribers.close()
        self.pipeline_gateways.close()
        self.model_gateways.close()

    # -- pipelines ------------------------------------------------------------------------

    async def LoadPipeline(self, request, context):
        if not request.HasField("pipeline") or not request.pipeline.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request has no pipeline (or the pipeline no name)")
        try:
            check_topic_names(self.chainer.namer, pipeline=request.pipeline.name,
                              steps=[s.name for s in request.pipeline.steps])
            record = self.store.add_pipeline(request.pipeline)
        except PipelineValidationError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if record is not None:
            log.info("pipeline %s version %d loaded (uid %s)", record.name, record.pv.version, record.pv.uid)
            self.chainer.create(record)
            self.pipeline_gateways.created(record)
        return scheduler_pb2.LoadPipelineResponse()

    async def UnloadPipeline(self, request, context):
        try:
            record = self.store.remove_pipeline(request.name)
        except NotFoundError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except ConflictError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        log.info("pipeline %s version %d unloading", record.name, record.pv.version)
        self.chainer.terminate(record, keep_topics=False)
        self.pipeline_gateways.removed(record)
        return scheduler_pb2.UnloadPipelineResponse()

    async def PipelineStatus(self, request, context):
        if request.HasField("name") and request.name:
            try:
                yield self.store.pipeline_status(request.name, request.allVersions)
            except NotFoundError as exc:
                await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            return
        for name in sorted(self.store.pipelines):
            yield self.store.pipeline_status(name, request.allVersions)

    async def SubscribePipelineStatus(self, request, context):
        log.info("pipeline status subscriber %s (gateway=%s)", request.subscriberName, request.isPipelineGateway)
        if request.isPipelineGateway:
            async for item in self.pipeline_gateways.streams.stream(request.subscriberName or context.peer()):
                yield item
            return
        initial = [self.store.pipeline_status(n) for n in sorted(self.store.pipelines)]
        async for item in self.pipeline_subscribers.stream(initial):
            yield item

    # -- models ---------------------------------------------------------------------------

    async def LoadModel(self, request, context):
        if not request.HasField("model") or not request.model.meta.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request has no model (or the model no name)")
        try:
            check_topic_names(self.chainer.namer, model=request.model.meta.name)
            model = resolve_endpoint(request.model, self.default_model_endpoint)
        except (ModelDefinitionError, PipelineValidationError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        record = self.store.add_model(model)
        log.info("model %s version %d available (%s)", model.meta.name, record.version, record.reason)
        self.model_gateways.created(model.meta.name)
        return scheduler_pb2.LoadModelResponse()

    async def UnloadModel(self, request, context):
        try:
            self.store.remove_model(request.model.name)
        except NotFoundError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        self.model_gateways.removed(request.model.name)
        return scheduler_pb2.UnloadModelResponse()

    async def ModelStatus(self, request, context):
        if request.HasField("model") and request.model.name:
            try:
                yield self.store.model_status(request.model.name, request.allVersions)
            except NotFoundError as exc:
                await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            return
        for name in sorted(self.store.models):
            yield self.store.model_status(name, request.allVersions)

    async def SubscribeModelStatus(self, request, context):
        log.info("model status subscriber %s (gateway=%s)", request.subscriberName, request.isModelGateway)
        if request.isModelGateway:
            async for item in self.model_gateways.streams.stream(request.subscriberName or context.peer()):
                yield item
            return
        initial = [self.store.model_status(n) for n in sorted(self.store.models)]
        async for item in self.model_subscribers.stream(initial):
            yield item

    async def SchedulerStatus(self, request, context):
        return scheduler_pb2.SchedulerStatusResponse(applicationVersion=f"dataflow-engine {__version__}")

    # -- gateway acks ---------------------------------------------------------------------

    async def PipelineStatusEvent(self, request, context):
        self.pipeline_gateways.handle_ack(request)
        return chainer_pb2.PipelineUpdateStatusResponse()

    async def ModelStatusEvent(self, request, context):
        self.model_gateways.handle_ack(request)
        return scheduler_pb2.ModelUpdateStatusResponse()

    # -- the Seldon operator --------------------------------------------------------------

    async def SubscribeControlPlane(self, request, context):
        """Ask the controller to (re)send its resources, as the reference does on every new stream:
        SEND_SERVERS first (it also marks the start of a stream), then experiments, models, pipelines.
        Re-sent pipelines and models of an unchanged generation are ignored by the store."""
        log.info("control plane subscriber %s", request.subscriberName)
        E = scheduler_pb2.ControlPlaneResponse
        initial = [E(event=e) for e in (E.SEND_SERVERS, E.SEND_EXPERIMENTS, E.SEND_MODELS, E.SEND_PIPELINES)]
        async for item in self.control_plane_subscribers.stream(initial):
            yield item

    async def ServerNotify(self, request, context):
        """Accepted and ignored: this scheduler places no models on servers (models name their
        endpoint), but the operator sends its servers after SEND_SERVERS and retries on errors."""
        log.debug("server notify for %d servers ignored", len(request.servers))
        return scheduler_pb2.ServerNotifyResponse()
