"""Pipeline and model gateways as the scheduler drives them: Create / Delete out, acks back.

A gateway subscribes with ``isPipelineGateway`` (``SubscribePipelineStatus``) or ``isModelGateway``
(``SubscribeModelStatus``). Unlike other subscribers (the CLI, the operator), which get every status
change, a gateway gets only instructions: a status message whose ``operation`` is Create or Delete,
for the latest version only, stamped with a ``timestamp`` (the iteration of the vector clock). It
acts on it and answers with ``PipelineStatusEvent`` / ``ModelStatusEvent``, echoing that timestamp;
the acks of the current iteration are folded into ``pipelineGwStatus`` / ``modelGwState``, so the
scheduler knows whether the gateways actually serve a pipeline, not just whether engines run it.

Every gateway replica is sent every pipeline and model (the reference's load balancer may give a
bucket to a subset of replicas; with all replicas sharing each bucket's consumer group, as ours do,
"all of them" is the equivalent assignment). When the set of gateways changes, every running latest
version is sent again (Create, or Delete while terminating), as the reference's rebalance does.
With no gateway connected, a gateway status stays where it was with a reason saying so, except
that a termination completes at once: nothing serves the pipeline any more.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from chainer_api import chainer_pb2, scheduler_pb2
from scheduler_min.conflicts import ConflictResolver, model_ack_state
from scheduler_min.store import PipelineRecord, Store

log = logging.getLogger(__name__)

S = scheduler_pb2.PipelineVersionState
M = scheduler_pb2.ModelStatus
PSR = scheduler_pb2.PipelineStatusResponse
MSR = scheduler_pb2.ModelStatusResponse
NO_PIPELINE_GATEWAYS = "No pipeline gateway available to handle pipeline"
NO_MODEL_GATEWAYS = "No model gateway available to handle model"


class _GatewayStreams:
    """Connected gateways by subscriber name, each with its own outgoing queue."""

    def __init__(self, kind: str, on_change: Callable[[], None]) -> None:
        self.kind = kind
        self.queues: dict[str, asyncio.Queue] = {}
        self._on_change = on_change

    def names(self) -> list[str]:
        return sorted(self.queues)

    def send_all(self, msg) -> None:
        for q in self.queues.values():
            q.put_nowait(msg)

    async def stream(self, name: str):
        """Yield what is sent to gateway ``name`` until it goes (or reconnects, or the scheduler stops)."""
        q: asyncio.Queue = asyncio.Queue()
        previous = self.queues.get(name)
        if previous is not None:  # the same gateway reconnecting: its old stream is finished
            previous.put_nowait(None)
        self.queues[name] = q
        log.info("%s gateway %s subscribed (%d connected)", self.kind, name, len(self.queues))
        self._on_change()
        try:
            while True:
                msg = await q.get()
                if msg is None:
                    return
                yield msg
        finally:
            if self.queues.get(name) is q:
                del self.queues[name]
                log.info("%s gateway %s disconnected (%d connected)", self.kind, name, len(self.queues))
                self._on_change()

    def close(self) -> None:
        for q in self.queues.values():
            q.put_nowait(None)


class PipelineGateways:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.streams = _GatewayStreams("pipeline", self.rebalance)
        self.conflicts = ConflictResolver()
        self.retries: dict[str, int] = {}  # version uid -> re-sends of a failed create/delete
        self.closing = False

    def _message(self, record: PipelineRecord, op: PSR.PipelineOperation,
                 timestamp: int) -> scheduler_pb2.PipelineStatusResponse:
        return PSR(pipelineName=record.name, versions=[self.store.with_state(record)],
                   timestamp=timestamp, operation=op)

    def _send(self, record: PipelineRecord, op: PSR.PipelineOperation) -> None:
        """A new iteration over every connected gateway, then the instruction to each."""
        ts = self.conflicts.new_iteration(record.name, self.streams.names())
        self.streams.send_all(self._message(record, op, ts))

    def created(self, record: PipelineRecord) -> None:
        """A new version was loaded: tell the gateways to serve the pipeline."""
        if not self.streams.queues:
            self.store.set_gw_state(record, record.gw_status, NO_PIPELINE_GATEWAYS)
            return
        self.store.set_gw_state(record, S.PipelineCreating, "")
        self._send(record, PSR.PipelineCreate)

    def removed(self, record: PipelineRecord) -> None:
        """The pipeline was unloaded: tell the gateways to stop serving it."""
        if not self.streams.queues:
            self.conflicts.delete(record.name)
            self.store.set_gw_state(record, S.PipelineTerminated, NO_PIPELINE_GATEWAYS)
            return
        self.store.set_gw_state(record, S.PipelineTerminating, "")
        self._send(record, PSR.PipelineDelete)

    def rebalance(self) -> None:
        if self.closing:
            return
        for record in self.store.gw_running_versions():
            self.rebalance_version(record)

    def rebalance_version(self, record: PipelineRecord) -> None:
        terminating = record.gw_status in (S.PipelineTerminating, S.PipelineFailedTerminating)
        if not self.streams.queues:
            if terminating:
                self.conflicts.delete(record.name)
            self.store.set_gw_state(record, S.PipelineTerminated if terminating else S.PipelineCreate,
                                    NO_PIPELINE_GATEWAYS)
            return
        if terminating:
            self._send(record, PSR.PipelineDelete)
        else:
            self.store.set_gw_state(record, S.PipelineCreating, "Rebalance")
            self._send(record, PSR.PipelineCreate)

    def handle_ack(self, message: chainer_pb2.PipelineUpdateStatusMessage) -> None:
        u = message.update
        record = self.store.get_version(u.pipeline, u.version, u.uid)
        if record is None:
            log.debug("gateway ack for unknown pipeline version %s:%s (%s) ignored", u.pipeline, u.version, u.uid)
            return
        settled = self.conflicts.settle_pipeline_ack(u.pipeline, message)
        if settled is None:
            log.debug("outdated gateway ack for %s:%s from %s ignored", u.pipeline, u.version, u.stream)
            return
        status, reason = settled
        if status in (S.PipelineReady, S.PipelineTerminated):
            self.retries.pop(u.uid, None)
        log.info("pipeline %s:%s gateways %s (%s) after ack from %s", u.pipeline, u.version,
                 S.PipelineStatus.Name(status), reason.strip(), u.stream)
        self.store.set_gw_state(record, status, reason)

    def retry_failed(self, max_retries: int) -> int:
        """Send a failed gateway create / delete of a latest version again, at most ``max_retries``
        times per version (a gateway may have failed on something transient, e.g. Kafka)."""
        sent = 0
        if not self.streams.queues:
            return sent
        for versions in list(self.store.pipelines.values()):
            record = versions[-1]
            if record.gw_status not in (S.PipelineFailed, S.PipelineFailedTerminating):
                continue
            n = self.retries.get(record.pv.uid, 0)
            if n >= max_retries:
                continue
            self.retries[record.pv.uid] = n + 1
            self.rebalance_version(record)
            sent += 1
        return sent

    def close(self) -> None:
        self.closing = True
        self.streams.close()


class ModelGateways:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.streams = _GatewayStreams("model", self.rebalance)
        self.conflicts = ConflictResolver()
        self.closing = False

    def _send(self, name: str, op: MSR.ModelOperation, keep_topics: bool = False) -> None:
        ts = self.conflicts.new_iteration(name, self.streams.names())
        msg = self.store.model_status(name)
        msg.operation, msg.timestamp, msg.keepTopics = op, ts, keep_topics
        self.streams.send_all(msg)

    def _set(self, name: str, state: M.ModelState, reason: str) -> None:
        latest = self.store.latest_model(name)
        if latest is not None:
            self.store.set_model_gw_state(name, latest.version, state, reason)

    def created(self, name: str) -> None:
        """A model (version) was loaded: tell the model gateways to serve it."""
        if not self.streams.queues:
            self._set(name, M.ModelCreate, NO_MODEL_GATEWAYS)
            return
        self._set(name, M.ModelProgressing, "Model is being loaded onto model gateway")
        self._send(name, MSR.ModelCreate)

    def removed(self, name: str) -> None:
        """The model was unloaded: tell the model gateways to stop serving it."""
        if not self.streams.queues:
            self.conflicts.delete(name)
            self._set(name, M.ModelTerminated, NO_MODEL_GATEWAYS)
            return
        self._set(name, M.ModelTerminating, "Model is being unloaded from model gateway")
        self._send(name, MSR.ModelDelete)

    def rebalance(self) -> None:
        if self.closing:
            return
        for name in self.store.gw_running_models():
            latest = self.store.latest_model(name)
            assert latest is not None  # gw_running_models lists models with a version
            terminating = latest.gw_state in (M.ModelTerminating, M.ModelTerminateFailed)
            if not self.streams.queues:
                if terminating:
                    self.conflicts.delete(name)
                self._set(name, M.ModelTerminated if terminating else M.ModelCreate, NO_MODEL_GATEWAYS)
            elif terminating:
                self._send(name, MSR.ModelDelete)
            else:
                self._set(name, M.ModelProgressing, "Rebalance")
                self._send(name, MSR.ModelCreate)

    def handle_ack(self, message: scheduler_pb2.ModelUpdateStatusMessage) -> None:
        u = message.update
        if self.conflicts.is_outdated(u.model, u.timestamp, u.stream):
            log.debug("outdated model gateway ack for %s:%s from %s ignored", u.model, u.version, u.stream)
            return
        self.conflicts.update(u.model, u.stream, model_ack_state(u.op, message.success))
        state, reason = self.conflicts.aggregate_model(u.model, u.op)
        if not message.success and message.reason:
            reason = f"{reason}{message.reason}"
        if state == M.ModelTerminated:
            self.conflicts.delete(u.model)
        log.info("model %s:%s gateways %s (%s) after ack from %s", u.model, u.version,
                 M.ModelState.Name(state), reason.strip(), u.stream)
        if self.store.set_model_gw_state(u.model, u.version, state, reason) is None:
            log.debug("gateway ack for unknown model version %s:%s ignored", u.model, u.version)

    def close(self) -> None:
        self.closing = True
        self.streams.close()
