"""The Chainer gRPC service: dataflow engines subscribe, receive pipeline updates, send acks.

Pipelines are sharded over the connected engines by consistent hashing of the version uid
(``maxShardCountMultiplier`` replicas each). Any change in the set of engines rebalances every
live version: selected engines get Create (or Delete while Terminating), the others Delete with
keepTopics. Acks are folded into the version's status by ``ConflictResolver``.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from chainer_api import chainer_pb2, chainer_pb2_grpc, scheduler_pb2
from dataflow.kafka import TopicNamer
from scheduler_min import convert
from scheduler_min.conflicts import ConflictResolver
from scheduler_min.hashring import HashRing
from scheduler_min.store import PipelineRecord, Store

log = logging.getLogger(__name__)
S = scheduler_pb2.PipelineVersionState
NO_ENGINES = "no dataflow engines available to handle pipeline"


@dataclass(eq=False)
class EngineStream:
    name: str
    queue: asyncio.Queue


class ChainerService(chainer_pb2_grpc.ChainerServicer):
    def __init__(self, store: Store, namer: TopicNamer, max_shard_count_multiplier: int = 1) -> None:
        self.store = store
        self.namer = namer
        self.ring = HashRing(max_shard_count_multiplier)
        self.streams: dict[str, EngineStream] = {}
        self.conflicts = ConflictResolver()
        self.retries: dict[str, int] = {}  # version uid -> failed create/delete re-sends so far
        self.closing = False  # shutting down: engines leaving must not rewrite pipeline states

    # -- engine side ----------------------------------------------------------------------

    async def SubscribePipelineUpdates(self, request, context):
        name = request.name
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "subscription needs a non-empty name")
        stream = EngineStream(name, asyncio.Queue())
        previous = self.streams.get(name)
        if previous is not None:  # the same engine reconnecting: its old stream is finished
            previous.queue.put_nowait(None)
        self.streams[name] = stream
        self.ring.add(name)
        log.info("dataflow engine %s subscribed (%d connected)", name, len(self.streams))
        self.rebalance()
        try:
            while True:
                msg = await stream.queue.get()
                if msg is None:
                    return
                yield msg
        finally:
            if self.streams.get(name) is stream:
                del self.streams[name]
                self.ring.remove(name)
                log.info("dataflow engine %s disconnected (%d connected)", name, len(self.streams))
                if not self.closing:
                    self.rebalance()

    async def PipelineUpdateEvent(self, request, context):
        self.handle_ack(request)
        return chainer_pb2.PipelineUpdateStatusResponse()

    def handle_ack(self, message: chainer_pb2.PipelineUpdateStatusMessage) -> None:
        u = message.update
        record = self.store.get_version(u.pipeline, u.version, u.uid)
        if record is None:
            log.debug("ack for unknown pipeline version %s:%s (%s) ignored", u.pipeline, u.version, u.uid)
            return
        settled = self.conflicts.settle_pipeline_ack(u.uid, message)
        if settled is None:
            log.debug("outdated ack for %s:%s from %s ignored", u.pipeline, u.version, u.stream)
            return
        status, reason = settled
        if status in (S.PipelineReady, S.PipelineTerminated):
            self.retries.pop(u.uid, None)
        log.info("pipeline %s:%s %s (%s) after ack from %s", u.pipeline, u.version,
                 S.PipelineStatus.Name(status), reason.strip(), u.stream)
        for old in self.store.set_state(record, status, reason):
            self.terminate(old, keep_topics=True)

    # -- scheduler side -------------------------------------------------------------------

    def _send(self, server: str, msg: chainer_pb2.PipelineUpdateMessage) -> None:
        stream = self.streams.get(server)
        if stream is not None:
            stream.queue.put_nowait(msg)

    def _send_to_owners(self, record: PipelineRecord, *, no_engines: S.PipelineStatus, sending: S.PipelineStatus,
                        message) -> None:
        """Send ``message(timestamp)`` to the engines owning ``record`` (a new iteration), or, with no
        engine connected, settle it in state ``no_engines``."""
        if not self.streams:
            self.store.set_state(record, no_engines, NO_ENGINES)
            return
        servers = self.ring.servers_for(record.pv.uid)
        ts = self.conflicts.new_iteration(record.pv.uid, servers)
        self.store.set_state(record, sending, "")
        msg = message(ts)
        for s in servers:
            self._send(s, msg)

    def create(self, record: PipelineRecord) -> None:
        """A new version was loaded: send Create to its engines."""
        self._send_to_owners(record, no_engines=S.PipelineCreate, sending=S.PipelineCreating,
                             message=lambda ts: convert.creation_message(record.pv, self.namer, ts))

    def terminate(self, record: PipelineRecord, keep_topics: bool) -> None:
        """The version is to go: send Delete to its engines."""
        self._send_to_owners(record, no_engines=S.PipelineTerminated, sending=S.PipelineTerminating,
                             message=lambda ts: convert.deletion_message(record.pv, self.namer,
                                                                         keep_topics=keep_topics, timestamp=ts))

    def rebalance(self) -> None:
        for record in self.store.running_versions():
            self.rebalance_version(record)

    def rebalance_version(self, record: PipelineRecord) -> None:
        terminating = record.status in (S.PipelineTerminate, S.PipelineTerminating)
        if not self.streams:
            self.store.set_state(record, S.PipelineTerminated if terminating else S.PipelineCreate, NO_ENGINES)
            if terminating:
                self.conflicts.delete(record.pv.uid)
            return
        servers = self.ring.servers_for(record.pv.uid)
        ts = self.conflicts.new_iteration(record.pv.uid, servers)
        if terminating:
            if record.status == S.PipelineTerminate:
                self.store.set_state(record, S.PipelineTerminating, "")
        else:
            self.store.set_state(record, S.PipelineCreating, "Rebalance")
        for name in list(self.streams):
            if name in servers:
                if terminating:
                    msg = convert.deletion_message(record.pv, self.namer, keep_topics=self._superseded(record),
                                                   timestamp=ts)
                else:
                    msg = convert.creation_message(record.pv, self.namer, ts)
            else:
                msg = convert.deletion_message(record.pv, self.namer, keep_topics=True, timestamp=ts)
            self._send(name, msg)

    def retry_failed(self, max_retries: int) -> int:
        """Re-send Create to failed latest versions and Delete to failed terminations, at most
        ``max_retries`` times per version (failures may be transient, e.g. Kafka unavailable)."""
        sent = 0
        if not self.streams:
            return sent
        for versions in list(self.store.pipelines.values()):
            for record in versions:
                retry_create = record.status == S.PipelineFailed and record is versions[-1]
                retry_delete = record.status == S.PipelineFailedTerminating
                if not (retry_create or retry_delete):
                    continue
                n = self.retries.get(record.pv.uid, 0)
                if n >= max_retries:
                    continue
                self.retries[record.pv.uid] = n + 1
                log.info("retrying %s of pipeline %s:%s (attempt %d/%d)", "create" if retry_create else "delete",
                         record.name, record.pv.version, n + 1, max_retries)
                if retry_create:
                    self.create(record)
                else:
                    self.terminate(record, keep_topics=self._superseded(record))
                sent += 1
        return sent

    def _superseded(self, record: PipelineRecord) -> bool:
        """A newer version of the same pipeline is live: its topics must survive this Delete."""
        return any(r.pv.version > record.pv.version and r.status not in (S.PipelineTerminated,)
                   for r in self.store.pipelines.get(record.name, []))

    def close_streams(self) -> None:
        self.closing = True
        for stream in list(self.streams.values()):
            stream.queue.put_nowait(None)
