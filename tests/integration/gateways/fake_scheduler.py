"""A scheduler stand-in for gateway tests: status messages put on its queues are streamed to the
(single) subscriber of each stream; gateway acks are recorded in ``acks``. Pipeline statuses go to
the pipeline-gateway subscriber (``pipelines``) or to plain subscribers (``pipeline_states``)."""
from __future__ import annotations

import queue
from concurrent import futures

import grpc

from chainer_api import chainer_pb2, scheduler_pb2, scheduler_pb2_grpc


class FakeScheduler(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self) -> None:
        self.models: queue.Queue = queue.Queue()
        self.pipelines: queue.Queue = queue.Queue()
        self.pipeline_states: queue.Queue = queue.Queue()
        self.acks: queue.Queue = queue.Queue()  # PipelineUpdateStatusMessage / ModelUpdateStatusMessage
        self.subscriptions: list = []

    @staticmethod
    def _stream(q, context):
        while context.is_active():
            try:
                yield q.get(timeout=0.2)
            except queue.Empty:
                continue

    def SubscribeModelStatus(self, request, context):
        self.subscriptions.append(request)
        yield from self._stream(self.models, context)

    def SubscribePipelineStatus(self, request, context):
        self.subscriptions.append(request)
        yield from self._stream(self.pipelines if request.isPipelineGateway else self.pipeline_states, context)

    def PipelineStatusEvent(self, request, context):
        self.acks.put(request)
        return chainer_pb2.PipelineUpdateStatusResponse()

    def ModelStatusEvent(self, request, context):
        self.acks.put(request)
        return scheduler_pb2.ModelUpdateStatusResponse()


def model_status(name: str, endpoint: str, state) -> scheduler_pb2.ModelStatusResponse:
    msg = scheduler_pb2.ModelStatusResponse(modelName=name)
    v = msg.versions.add(version=1)
    v.state.state = state
    v.modelDefn.meta.name = name
    v.modelDefn.modelSpec.parameters.add(name="endpoint", value=endpoint)
    return msg


def pipeline_status(name: str, status, operation: int = 0, timestamp: int = 0,
                    uid: str = "") -> scheduler_pb2.PipelineStatusResponse:
    """A plain status, or with ``operation`` an instruction to a pipeline gateway."""
    msg = scheduler_pb2.PipelineStatusResponse(pipelineName=name, operation=operation, timestamp=timestamp)
    v = msg.versions.add()
    v.pipeline.name, v.pipeline.uid = name, uid
    v.state.pipelineVersion = 1
    v.state.status = status
    return msg


def start_fake_scheduler(port: int):
    """(server, FakeScheduler) listening on 127.0.0.1:port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fake = FakeScheduler()
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(fake, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, fake
