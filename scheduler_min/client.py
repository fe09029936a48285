"""A small synchronous client of the Scheduler API, with errors turned into one-line messages."""
from __future__ import annotations

import time

import grpc

from chainer_api import scheduler_pb2, scheduler_pb2_grpc

SUBSCRIBER = "seldon-cli"


class SchedulerCallError(RuntimeError):
    """A scheduler call failed; the message is fit to show a user."""


class SchedulerClient:
    def __init__(self, host: str, timeout: float = 10.0) -> None:
        self.host = host
        self.timeout = timeout
        self._channel = grpc.insecure_channel(host, options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024)])
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, fn):
        try:
            return fn()
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise SchedulerCallError(
                    f"cannot reach the scheduler at {self.host} ({code.name.lower()}); is `dataflow scheduler` "
                    f"running there? Set --scheduler-host or SELDON_SCHEDULE_HOST") from None
            raise SchedulerCallError(exc.details() or code.name) from None

    def load_pipeline(self, pipeline: scheduler_pb2.Pipeline) -> None:
        self._call(lambda: self._stub.LoadPipeline(
            scheduler_pb2.LoadPipelineRequest(pipeline=pipeline), timeout=self.timeout))

    def unload_pipeline(self, name: str) -> None:
        self._call(lambda: self._stub.UnloadPipeline(
            scheduler_pb2.UnloadPipelineRequest(name=name), timeout=self.timeout))

    def pipeline_status(self, name: str | None = None, all_versions: bool = False):
        req = scheduler_pb2.PipelineStatusRequest(subscriberName=SUBSCRIBER, allVersions=all_versions)
        if name:
            req.name = name
        return self._call(lambda: list(self._stub.PipelineStatus(req, timeout=self.timeout)))

    def load_model(self, model: scheduler_pb2.Model) -> None:
        self._call(lambda: self._stub.LoadModel(scheduler_pb2.LoadModelRequest(model=model), timeout=self.timeout))

    def unload_model(self, name: str) -> None:
        self._call(lambda: self._stub.UnloadModel(scheduler_pb2.UnloadModelRequest(
            model=scheduler_pb2.ModelReference(name=name)), timeout=self.timeout))

    def model_status(self, name: str | None = None, all_versions: bool = False):
        req = scheduler_pb2.ModelStatusRequest(subscriberName=SUBSCRIBER, allVersions=all_versions)
        if name:
            req.model.name = name
        return self._call(lambda: list(self._stub.ModelStatus(req, timeout=self.timeout)))

    def wait_pipeline(self, name: str, state: str, timeout: float):
        """Poll until the latest version's status is ``state`` (e.g. ``PipelineReady``).

        ``PipelineReady`` also waits for ``modelsReady``: a pipeline whose step models are not all
        available cannot answer, and the pipeline gateways' ready endpoints say so too."""
        def done(r) -> bool:
            if not r.versions:
                return False
            st = r.versions[-1].state
            if scheduler_pb2.PipelineVersionState.PipelineStatus.Name(st.status) != state:
                return False
            return st.modelsReady or state != "PipelineReady"

        def why(r) -> str:
            reason = r.versions[-1].state.reason.strip() if r.versions else ""
            return f"Pipeline wait status timeout ({reason})" if reason else "Pipeline wait status timeout"

        return _wait(lambda: self.pipeline_status(name)[0], done, timeout, why)

    def wait_model(self, name: str, state: str, timeout: float):
        return _wait(lambda: self.model_status(name)[0],
                     lambda r: r.versions and scheduler_pb2.ModelStatus.ModelState.Name(
                         r.versions[-1].state.state) == state, timeout, "Model wait status timeout")


def _wait(fetch, done, timeout: float, message):
    """``message``: the error text, or a function of the last answer giving it."""
    deadline = time.monotonic() + timeout
    while True:
        res = fetch()
        if done(res):
            return res
        if time.monotonic() > deadline:
            raise SchedulerCallError(message(res) if callable(message) else message)
        time.sleep(0.2)
