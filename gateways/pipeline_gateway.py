"""Pipeline gateway core: synchronous inference over Kafka (spec 5.2).

A request is produced to ``pipeline.<r>.inputs`` (or ``model.<r>.inputs``) on a partition p owned
by this gateway's consumer of the matching output topic, under the composite key
``<p>.<r>.<requestId>``; the consumer loop completes the waiting call when a record with that key
appears on the output topic (first wins). Unlike the reference, a wait is bounded by
``timeout_s`` (``GatewayTimeout``) and its pending entry is released.

The HTTP and gRPC front ends (``pipeline_http``, ``pipeline_grpc``) only translate to/from ``infer``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from dataflow.kafka import KafkaSettings, TopicNamer, pipelinegateway_group_id

from gateways import routing
from gateways.kafka_io import AsyncProducer, ProduceError, TopicSetConsumer
from gateways.metrics import PipelineMetrics
from gateways.routing import Resource

log = logging.getLogger(__name__)

PARTITION_WAIT_S = 10.0  # reference: wait up to 10 s for an output-topic assignment
DEFAULT_TIMEOUT_S = 30.0
MAX_NUM_CONSUMERS = 100  # PIPELINEGATEWAY_MAX_NUM_CONSUMERS


class GatewayError(RuntimeError):
    """The gateway could not run the request (not loaded, no partitions, produce failed): 500."""


class PipelineNotFound(GatewayError):
    """The pipeline is not known to this gateway (not announced by the scheduler)."""


class PartitionRevoked(GatewayError):
    """The partition a request waits on is no longer this gateway's (after a rebalance)."""


class GatewayTimeout(GatewayError):
    """No output arrived within the request timeout: REST 504 / gRPC DEADLINE_EXCEEDED."""


@dataclass(frozen=True, slots=True)
class InferResult:
    """The output record that answered a request."""

    key: str
    value: bytes
    headers: list[tuple[str, bytes]]
    error: str | None  # ``"<model> : <error text>"`` when the record carries seldon-pipeline-errors


class PipelineGateway:
    def __init__(self, settings: KafkaSettings, namer: TopicNamer | None = None, *, consumer_prefix: str = "",
                 timeout_s: float = DEFAULT_TIMEOUT_S, partition_wait_s: float = PARTITION_WAIT_S,
                 max_num_consumers: int = MAX_NUM_CONSUMERS, metrics: PipelineMetrics | None = None,
                 lazy_pipelines: bool = False) -> None:
        self.settings = settings
        self.namer = namer or TopicNamer()
        self.consumer_prefix = consumer_prefix
        self.timeout_s = timeout_s
        self.partition_wait_s = partition_wait_s
        self.max_num_consumers = max_num_consumers
        self.metrics = metrics or PipelineMetrics()
        # Without a scheduler (tests, ``--no-scheduler``) pipelines load on first use like models.
        self.lazy_pipelines = lazy_pipelines
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: AsyncProducer | None = None
        self._consumers: dict[str, TopicSetConsumer] = {}
        self._loaded: dict[Resource, int] = {}  # resource -> version (0 for models)
        self._pending: dict[str, asyncio.Future] = {}
        self._pending_where: dict[str, tuple[str, str, int]] = {}  # key -> (group, output topic, partition)

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> "PipelineGateway":
        self._loop = asyncio.get_running_loop()
        self._producer = AsyncProducer(self.settings)
        return self

    async def close(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(GatewayError("gateway shutting down"))
        consumers, self._consumers = list(self._consumers.values()), {}
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close)
        await asyncio.gather(*(asyncio.to_thread(c.close) for c in consumers))

    # ---- resources --------------------------------------------------------------------------
    def group_id(self, name: str) -> str:
        return pipelinegateway_group_id(name, self.consumer_prefix, self.namer.namespace, self.max_num_consumers)

    def load(self, resource: Resource, version: int = 0) -> None:
        """Start consuming the resource's output topic (idempotent)."""
        self._loaded[resource] = version
        group = self.group_id(resource.name)
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = TopicSetConsumer(self.settings, group, self._on_records, start_at_end=True,
                                        on_assign=lambda _parts: self._loop.call_soon_threadsafe(
                                            self._check_pending_partitions),
                                        name=f"pipelinegw-{group}")
            self._consumers[group] = consumer
        consumer.add_topic(resource.output_topic(self.namer))

    def unload(self, resource: Resource) -> None:
        if self._loaded.pop(resource, None) is None:
            return
        group = self.group_id(resource.name)
        consumer = self._consumers.get(group)
        if consumer is not None:
            consumer.remove_topic(resource.output_topic(self.namer))

    def load_pipeline(self, name: str, version: int = 0) -> None:
        self.load(Resource(name, False), version)

    def unload_pipeline(self, name: str) -> None:
        self.unload(Resource(name, False))

    def is_loaded(self, resource: Resource) -> bool:
        return resource in self._loaded

    def pipelines(self) -> list[str]:
        return sorted(r.name for r in self._loaded if not r.is_model)

    def ready(self, resource: Resource) -> bool:
        """Loaded and the output consumer owns at least one partition."""
        if resource not in self._loaded:
            return False
        consumer = self._consumers.get(self.group_id(resource.name))
        return bool(consumer and consumer.partitions(resource.output_topic(self.namer)))

    # ---- inference ------------------------------------------------------------------------------
    async def infer(self, resource: Resource, request: bytes, caller_headers: list[tuple[str, bytes]],
                    request_id: str | None = None, timeout_s: float | None = None) -> InferResult:
        """Produce ``request`` for ``resource`` and wait for its output record.

        If a rebalance takes the chosen partition away while waiting, the request is published
        once more on a partition this gateway still owns (reference: max one requeue).
        """
        if self._producer is None:
            raise GatewayError("gateway not started")
        if resource not in self._loaded:
            if resource.is_model or self.lazy_pipelines:
                self.load(resource)
            else:
                raise PipelineNotFound(f"pipeline {resource.name} not found")
        request_id = request_id or routing.new_request_id()
        headers = routing.request_headers(caller_headers, resource, request_id)
        wait = self.timeout_s if timeout_s is None else timeout_s
        deadline = self._loop.time() + wait if wait and wait > 0 else None
        for attempt in range(2):
            try:
                return await self._publish_and_wait(resource, request, headers, request_id, deadline)
            except PartitionRevoked:
                if attempt == 1:
                    raise GatewayError("partition(s) revoked") from None
                log.info("partition revoked while waiting for %s: publishing again", request_id)
        raise GatewayError("partition(s) revoked")  # pragma: no cover

    async def _publish_and_wait(self, resource: Resource, request: bytes, headers, request_id: str,
                                deadline: float | None) -> InferResult:
        group = self.group_id(resource.name)
        consumer = self._consumers[group]
        out_topic = resource.output_topic(self.namer)
        partitions = consumer.partitions(out_topic) or await asyncio.to_thread(
            consumer.wait_partitions, out_topic, self.partition_wait_s)
        if not partitions:
            raise GatewayError(f"no partitions assigned for {out_topic} after {self.partition_wait_s}s")
        partition = random.choice(partitions)
        key = routing.composite_key(partition, resource.name, request_id)
        if key in self._pending:
            raise GatewayError(f"a request with key {key} is already in flight")
        fut = self._loop.create_future()
        self._pending[key] = fut
        self._pending_where[key] = (group, out_topic, partition)
        try:
            try:
                await self._producer.produce(resource.input_topic(self.namer), request, key=key,
                                             partition=partition, headers=headers)
            except ProduceError as exc:
                raise GatewayError(str(exc)) from exc
            left = None if deadline is None else max(0.0, deadline - self._loop.time())
            try:
                return await asyncio.wait_for(fut, timeout=left)
            except asyncio.TimeoutError:
                raise GatewayTimeout(f"no response for {key} within {self.timeout_s}s") from None
        finally:
            self._pending.pop(key, None)
            self._pending_where.pop(key, None)

    def _check_pending_partitions(self) -> None:
        """After a (re)assignment: fail waits whose partition this gateway no longer owns."""
        for key, (group, topic, partition) in list(self._pending_where.items()):
            consumer = self._consumers.get(group)
            fut = self._pending.get(key)
            if fut is None or fut.done():
                continue
            if consumer is None or partition not in consumer.partitions(topic):
                fut.set_exception(PartitionRevoked(f"partition {partition} of {topic} revoked"))

    # ---- consumer side ------------------------------------------------------------------------
    def _on_records(self, msgs) -> None:
        """Consumer thread: pass candidate records to the loop (which owns ``_pending``)."""
        batch = []
        for m in msgs:
            k = m.key()
            if k is None:
                continue
            key = k.decode("utf-8", "replace")
            if key in self._pending:  # racy read is fine: the loop re-checks
                batch.append((key, m.value() or b"", list(m.headers() or [])))
        if batch and self._loop is not None:
            self._loop.call_soon_threadsafe(self._complete, batch)

    def _complete(self, batch) -> None:
        for key, value, headers in batch:
            fut = self._pending.get(key)
            if fut is None or fut.done():
                if fut is not None:
                    log.debug("Got duplicate request with key %s", key)
                continue
            fut.set_result(InferResult(key, value, headers, routing.error_message(headers, value)))


def elapsed_since(start: float) -> float:
    return time.perf_counter() - start
