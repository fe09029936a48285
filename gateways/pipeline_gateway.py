"""Pipeline gateway core: synchronous inference over Kafka.

A request is produced to ``pipeline.<r>.inputs`` (or ``model.<r>.inputs``) on a partition p owned
by this gateway's consumer of the matching output topic, under the composite key
``<p>.<r>.<requestId>``; the consumer loop completes the waiting call when a record with that key
appears on the output topic (first wins). Unlike the reference, a wait is bounded
(``GatewayTimeout``): by the caller's own timeout when given, else by the pipeline's default
(``set_pipeline_spec``: derived from its join and batch windows and model calls, see
``pipeline_timeouts``), else by ``timeout_s``. Whatever ends the wait (answer, timeout, the
caller going away, an unload), its pending entry is released.

Readiness. A pipeline is ready when it is loaded here, its output consumer owns a partition, and
the scheduler reports every step model ready (``set_models_ready``, from ``modelsReady``): a
pipeline whose model is missing would only time requests out.

What is served. Only resources the gateway knows: pipelines the scheduler announced
(``load_pipeline``), models the scheduler reports available (``add_model``; their output topic is
subscribed on first use), or, when running without a scheduler (``lazy_pipelines``), any resource
whose output topic exists in Kafka. Anything else fails at once with ``PipelineNotFound``
(REST 404 / gRPC NOT_FOUND). A made-up name must never cause a subscription, a wait for partitions
that will never be assigned, or state that outlives the request: otherwise every request naming a
random resource costs a subscription and a 10 s wait, and memory grows with each new name.

Consumers. Output topics are read in the consumer groups ``pipelinegateway_group_id(name)``: a
fixed number (``max_num_consumers``) of hashed buckets whose names every gateway replica shares,
including other implementations, so replicas split each output topic's partitions between them.
A Kafka consumer belongs to exactly one group, so the gateway runs one consumer per bucket that
holds at least one loaded resource (never one per pipeline), adds and removes topics on it as
resources come and go, and stops it when its last resource goes, which releases its threads,
client and per-topic state. By default (``max_num_consumers=1``) all output topics share one group
and one consumer, which rebalances incrementally (cooperative-sticky): a pipeline coming or going
moves only its own topic's partitions, the other pipelines' answers keep flowing. On the embedded
broker, where every fetch costs the broker CPU whether or not data comes back, the consumer
fetches an output topic only while a request waits for an answer on it (``read_on_demand``): with
a hundred pipelines loaded a fetch then names one or two partitions instead of a hundred (requests
to 10 of 100 loaded pipelines: p50 62 -> 39-43 ms). The gateway has a single producer for
everything it sends.

Waiting. Nothing waits on a thread: a request that finds no partition assigned yet awaits a
future that the consumers' assignment callbacks resolve, and shutdown awaits futures the client
threads resolve as they exit. So any number of such waits cost no thread and cannot hold up
other requests (as waits in the loop's small default executor would).

The HTTP and gRPC front ends (``pipeline_http``, ``pipeline_grpc``) only translate to/from ``infer``.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from dataflow import oip
from dataflow.kafka import KafkaSettings, TopicNamer, pipelinegateway_group_id
from dataflow.oip import strip_schema_prefix
from dataflow.schema_registry import Framer
from gateways import pipeline_signature, pipeline_timeouts, routing
from gateways.kafka_io import AsyncProducer, ProduceError, TopicSetConsumer
from gateways.metrics import PipelineMetrics
from gateways.model_metadata import ModelMetadataCache
from gateways.routing import Resource

log = logging.getLogger(__name__)

PARTITION_WAIT_S = 10.0  # reference: wait up to 10 s for an output-topic assignment
DEFAULT_TIMEOUT_S = 30.0
# The reference's clients raise the producer's message.max.bytes to librdkafka's maximum, so a
# request up to this size is a legitimate one; larger ones are refused before any Kafka work.
MAX_REQUEST_BYTES = 1_000_000_000
# PIPELINEGATEWAY_MAX_NUM_CONSUMERS. One bucket: one consumer (incremental rebalances, see ``load``)
# serves every output topic, whatever the number of pipelines. More buckets spread the topics over
# more consumers and groups; every replica of the gateway must use the same value.
MAX_NUM_CONSUMERS = 1
TOPIC_LOOKUP_TIMEOUT_S = 5.0


class GatewayError(RuntimeError):
    """The gateway could not run the request (produce failed, unloaded): 500.

    Each subclass carries the status the front ends answer with (REST code, gRPC code name), so
    the two front ends cannot drift apart."""

    http_status = 500
    grpc_code = "FAILED_PRECONDITION"  # the reference's code for gateway failures


class BadRequest(GatewayError):
    """The request itself is wrong (body, shapes, headers): REST 400 / gRPC INVALID_ARGUMENT."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class PipelineNotFound(GatewayError):
    """The resource is not one this gateway serves: REST 404 / gRPC NOT_FOUND."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class DuplicateRequest(GatewayError):
    """A request with this X-Request-Id is already waiting for this resource: 409 / ALREADY_EXISTS.

    Its answer would be indistinguishable from the first one's."""

    http_status = 409
    grpc_code = "ALREADY_EXISTS"


class RequestTooLarge(GatewayError):
    """Over the gateway's request size limit (or Kafka's message size): 413 / RESOURCE_EXHAUSTED."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unavailable(GatewayError):
    """Transient: no output partition assigned yet (rebalance, broker pause): 503 / UNAVAILABLE."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class PartitionRevoked(Unavailable):
    """The partition a request waits on is no longer this gateway's (after a rebalance)."""


class GatewayTimeout(GatewayError):
    """No output arrived within the request timeout: REST 504 / gRPC DEADLINE_EXCEEDED."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


def check_request(req) -> None:
    """What both front ends refuse before producing (``BadRequest``): a request without inputs
    (the engine would drop it and the caller wait for the timeout) and contents that do not fill
    their shape (checked by counting; a claimed shape is never allocated)."""
    if not req.inputs:
        raise BadRequest("request has no inputs")
    try:
        oip.check_tensors(req)
    except oip.CodecError as exc:
        raise BadRequest(str(exc)) from None


def _produce_failure(exc: ProduceError, size: int) -> GatewayError:
    """What a request whose record could not be produced fails with."""
    if exc.code == KafkaError.MSG_SIZE_TOO_LARGE:
        return RequestTooLarge(f"request of {size} bytes is over Kafka's message size limit")
    return GatewayError(str(exc))


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
                 lazy_pipelines: bool = False, framer: Framer | None = None,
                 max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
        if max_num_consumers < 1:
            raise ValueError(f"max_num_consumers must be at least 1, got {max_num_consumers}")
        self.settings = settings
        self.namer = namer or TopicNamer()
        self.consumer_prefix = consumer_prefix
        self.timeout_s = timeout_s
        self.partition_wait_s = partition_wait_s
        self.max_num_consumers = max_num_consumers
        self.metrics = metrics or PipelineMetrics()
        # Without a scheduler (tests, ``--no-scheduler``) a resource is served once its output
        # topic is found in Kafka; with one, only what the scheduler announced.
        self.lazy_pipelines = lazy_pipelines
        self.framer = framer  # schema-registry framing of the requests it writes; None: raw values
        self.max_request_bytes = max_request_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: AsyncProducer | None = None
        self._consumers: dict[str, TopicSetConsumer] = {}  # group -> consumer; only groups in use
        self._stopping: set[TopicSetConsumer] = set()  # stopped, thread not yet gone
        self._loaded: dict[Resource, int] = {}  # resource -> version (0 for models)
        self._known_models: set[str] = set()
        self._pending: dict[str, asyncio.Future] = {}
        self._in_flight: set[tuple[Resource, str]] = set()  # caller-given request ids being served
        self._pending_where: dict[str, tuple[Resource, str, str, int]] = {}  # key -> (resource, group, topic, p)
        self._assign_waiter: asyncio.Future | None = None
        # pipeline -> (version, models ready, reason), as the scheduler last reported it
        self._models_ready: dict[str, tuple[int, bool, str]] = {}
        self._timeouts: dict[str, float | None] = {}  # pipeline -> default timeout (None: no bound)
        self._specs: dict[str, object] = {}  # pipeline -> scheduler_pb2.Pipeline, as announced
        self.model_metadata: ModelMetadataCache | None = None  # with a scheduler
        self.model_timeout_s = pipeline_timeouts.MODEL_TIMEOUT_S
        self.default_join_window_ms = pipeline_timeouts.DEFAULT_JOIN_WINDOW_MS
        self._admin: AdminClient | None = None  # for topic look-ups (only without a scheduler)
        self._topic_checks: dict[str, asyncio.Future] = {}

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> PipelineGateway:
        self._loop = asyncio.get_running_loop()
        overrides = {} if "message.max.bytes" in dict(self.settings.extra) else \
            {"message.max.bytes": min(self.max_request_bytes + 65536, MAX_REQUEST_BYTES)}
        # The answer record is what a request waits for; its delivery report would only cost a
        # Python call and a loop wake-up per request. Failures still reach the waiting request.
        self._producer = AsyncProducer(self.settings, errors_only=True, **overrides)
        return self

    async def close(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(GatewayError("gateway shutting down"))
        consumers = [*self._consumers.values(), *self._stopping]
        self._consumers = {}
        self._loaded.clear()
        for c in consumers:
            c.stop()
        if self._producer is not None:
            await self._producer.aclose()
            self._producer = None
        await asyncio.gather(*(c.wait_closed() for c in consumers))
        self._stopping.clear()
        self._admin = None

    # ---- resources --------------------------------------------------------------------------
    def group_id(self, name: str) -> str:
        return pipelinegateway_group_id(name, self.consumer_prefix, self.namer.namespace, self.max_num_consumers)

    def load(self, resource: Resource, version: int = 0) -> None:
        """Start consuming the resource's output topic (idempotent).

        The topic joins the consumer of the resource's group, created if the group had none.
        """
        self._loaded[resource] = version
        group = self.group_id(resource.name)
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = TopicSetConsumer(self.settings, group, self._on_records, start_at_end=True,
                                        on_assign=self._assigned_on_thread, name=f"pipelinegw-{group}",
                                        cooperative=True, read_on_demand=True)
            self._consumers[group] = consumer
        consumer.add_topic(resource.output_topic(self.namer))

    def unload(self, resource: Resource) -> None:
        """Stop consuming the resource's output topic and fail requests still waiting on it.

        The group's consumer is stopped when this was its last topic, so nothing stays behind.
        """
        if self._loaded.pop(resource, None) is None:
            return
        group = self.group_id(resource.name)
        consumer = self._consumers.get(group)
        if consumer is not None:
            consumer.remove_topic(resource.output_topic(self.namer))
            if not consumer.topics:
                del self._consumers[group]
                self._retire(consumer)
        for key, (res, *_where) in list(self._pending_where.items()):
            fut = self._pending.get(key)
            if res == resource and fut is not None and not fut.done():
                fut.set_exception(GatewayError(f"{resource.header_value} was unloaded while request {key} waited"))
        self._wake_partition_waiters()
        if not any(r.name == resource.name for r in self._loaded):
            self.metrics.forget(resource.name)
        if not resource.is_model:
            self._models_ready.pop(resource.name, None)
            self._timeouts.pop(resource.name, None)
            self._specs.pop(resource.name, None)

    def _retire(self, consumer: TopicSetConsumer) -> None:
        self._stopping.add(consumer)
        loop = self._loop

        def gone() -> None:
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._stopping.discard, consumer)
            else:
                self._stopping.discard(consumer)

        consumer.on_exit(gone)
        consumer.stop()

    def load_pipeline(self, name: str, version: int = 0) -> None:
        self.load(Resource(name, False), version)

    def unload_pipeline(self, name: str) -> None:
        self.unload(Resource(name, False))

    def add_model(self, name: str) -> None:
        """The scheduler reports model ``name`` available: serve ``<name>.model`` calls.

        Its output topic is subscribed on the first such call, not now: most models are only
        ever called through pipelines.
        """
        self._known_models.add(name)

    def remove_model(self, name: str) -> None:
        self._known_models.discard(name)
        self.unload(Resource(name, True))

    def is_loaded(self, resource: Resource) -> bool:
        return resource in self._loaded

    def pipelines(self) -> list[str]:
        return sorted(r.name for r in self._loaded if not r.is_model)

    def consumers(self) -> dict[str, TopicSetConsumer]:
        """The running output consumers by group (one per group bucket in use)."""
        return dict(self._consumers)

    def set_models_ready(self, name: str, version: int, ready: bool, reason: str = "", *,
                         only_if_unknown: bool = False) -> None:
        """The scheduler's ``modelsReady`` of pipeline ``name`` (and its reason). ``only_if_unknown``:
        keep what is already known of this version (a Create instruction carries the state of when
        it was sent, older than what the status stream may have said since)."""
        known = self._models_ready.get(name)
        if only_if_unknown and known is not None and known[0] == version:
            return
        self._models_ready[name] = (version, ready, reason)

    def set_pipeline_spec(self, name: str, spec) -> None:
        """The pipeline's spec (``scheduler_pb2.Pipeline``) as the scheduler announced it: sets the
        pipeline's default request timeout (``pipeline_timeouts``) and its tensor metadata."""
        self._specs[name] = spec
        if self.timeout_s is None or self.timeout_s <= 0:
            return  # waits are unbounded anyway
        self._timeouts[name] = pipeline_timeouts.default_timeout_s(
            spec, self.timeout_s, default_join_window_ms=self.default_join_window_ms,
            model_timeout_s=self.model_timeout_s)

    def default_timeout(self, resource: Resource) -> float | None:
        """Seconds a request for ``resource`` waits unless its caller says otherwise; None: no bound."""
        if not resource.is_model and resource.name in self._timeouts:
            return self._timeouts[resource.name]
        return self.timeout_s if self.timeout_s and self.timeout_s > 0 else None

    def not_ready_reason(self, resource: Resource) -> str | None:
        """Why ``resource`` is not ready for traffic, or None when it is."""
        if resource not in self._loaded:
            return f"{resource.header_value} is not served"
        consumer = self._consumers.get(self.group_id(resource.name))
        if not (consumer and consumer.partitions(resource.output_topic(self.namer))):
            return f"{resource.header_value}: no output partition assigned yet"
        known = None if resource.is_model else self._models_ready.get(resource.name)
        if known is not None and not known[1]:
            return f"{resource.header_value}: {known[2] or 'models not ready'}"
        return None

    def ready(self, resource: Resource) -> bool:
        """Loaded, the output consumer owns at least one partition, and (pipelines) the scheduler
        reports every step model ready."""
        return self.not_ready_reason(resource) is None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def served_version(self, resource: Resource) -> int:
        """The version ``resource`` is served at (0 for models), for metadata calls;
        ``PipelineNotFound`` if this gateway does not serve it. A known model is not subscribed."""
        if resource in self._loaded:
            return self._loaded[resource]
        if not (resource.is_model and resource.name in self._known_models):
            await self._ensure_served(resource)
        return self._loaded.get(resource, 0)

    async def tensor_metadata(self, resource: Resource) -> tuple[list[dict], list[dict]]:
        """(inputs, outputs) tensor metadata of a served resource, where its models' servers tell
        (``pipeline_signature``); empty lists when unknown."""
        cache = self.model_metadata
        if cache is None:
            return [], []
        if resource.is_model:
            meta = await cache.get(resource.name)
            return (meta.get("inputs", []), meta.get("outputs", [])) if meta else ([], [])
        spec = self._specs.get(resource.name)
        if spec is None:
            return [], []
        models = sorted(pipeline_signature.first_and_last_models(spec))
        found = await asyncio.gather(*(cache.get(m) for m in models))
        return pipeline_signature.signature(spec, dict(zip(models, found)))

    async def is_ready(self, resource: Resource) -> bool:
        """``ready`` for a ready call; ``PipelineNotFound`` if not served. Without a scheduler the
        call serves a resource whose topic exists (as an infer would), ready once assigned."""
        if resource not in self._loaded:
            if resource.is_model:
                raise PipelineNotFound(f"{resource.header_value} not found")
            await self._ensure_served(resource)
        return self.ready(resource)

    async def _ensure_served(self, resource: Resource) -> None:
        """Load ``resource`` if this gateway may serve it, else raise ``PipelineNotFound``."""
        if resource in self._loaded:
            return
        kind = "model" if resource.is_model else "pipeline"
        if self.lazy_pipelines:
            known = await self._topic_exists(resource.output_topic(self.namer))
        else:
            known = resource.is_model and resource.name in self._known_models
        if not known:
            raise PipelineNotFound(f"{kind} {resource.name} not found")
        if resource not in self._loaded:
            self.load(resource)

    async def _topic_exists(self, topic: str) -> bool:
        """Ask the cluster whether ``topic`` exists (without creating it).

        Concurrent look-ups of one name share a single request; the answer arrives through a
        future resolved by the admin client's own thread.
        """
        fut = self._topic_checks.get(topic)
        if fut is None:
            if self._admin is None:
                self._admin = AdminClient(self.settings.common())
            request = self._admin.describe_topics(TopicCollection([topic]),
                                                  request_timeout=TOPIC_LOOKUP_TIMEOUT_S)[topic]
            fut = asyncio.wrap_future(request)
            self._topic_checks[topic] = fut
            fut.add_done_callback(lambda _f: self._topic_checks.pop(topic, None))
        try:
            await asyncio.shield(fut)
            return True
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return False
            raise GatewayError(f"cannot look up topic {topic}: {err}") from exc

    # ---- inference ------------------------------------------------------------------------------
    async def infer(self, resource: Resource, request: bytes, caller_headers: list[tuple[str, bytes]],
                    request_id: str | None = None, timeout_s: float | None = None) -> InferResult:
        """Produce ``request`` for ``resource`` and wait for its output record.

        If a rebalance takes the chosen partition away while waiting, the request is published
        once more on a partition this gateway still owns (reference: max one requeue).
        """
        if self._producer is None:
            raise GatewayError("gateway not started")
        assert self._loop is not None  # set with the producer by start()
        if len(request) > self.max_request_bytes:
            raise RequestTooLarge(f"request of {len(request)} bytes is over the gateway's limit of "
                                  f"{self.max_request_bytes} bytes")
        await self._ensure_served(resource)
        if request_id:
            if (resource, request_id) in self._in_flight:
                raise DuplicateRequest(f"a request with id {request_id} for {resource.header_value} "
                                       f"is already in flight")
            self._in_flight.add((resource, request_id))
            mine = (resource, request_id)
        else:
            request_id, mine = routing.new_request_id(), None
        try:
            headers = routing.request_headers(caller_headers, resource, request_id)
            wait = self.default_timeout(resource) if timeout_s is None else timeout_s
            deadline = self._loop.time() + wait if wait and wait > 0 else None
            for attempt in range(2):
                try:
                    return await self._publish_and_wait(resource, request, headers, request_id, deadline, wait)
                except PartitionRevoked:
                    if attempt == 1:
                        raise Unavailable("partition(s) revoked twice while waiting; try again") from None
                    log.info("partition revoked while waiting for %s: publishing again", request_id)
            raise Unavailable("partition(s) revoked")  # pragma: no cover
        finally:
            if mine is not None:
                self._in_flight.discard(mine)

    async def _partitions(self, resource: Resource, out_topic: str) -> list[int]:
        """Partitions of ``out_topic`` this gateway owns, waiting up to ``partition_wait_s`` for
        an assignment (a new subscription, or a rebalance in progress)."""
        assert self._loop is not None  # set by start()
        end = self._loop.time() + self.partition_wait_s
        while True:
            if resource not in self._loaded:
                raise PipelineNotFound(f"{resource.header_value} is no longer served")
            consumer = self._consumers.get(self.group_id(resource.name))
            partitions = consumer.partitions(out_topic) if consumer is not None else []
            if partitions:
                return partitions
            left = end - self._loop.time()
            if left <= 0:
                raise Unavailable(f"no partitions assigned for {out_topic} after {self.partition_wait_s}s; try again")
            # Created and awaited within this loop step, and resolved on the loop by
            # ``_on_assigned``, so an assignment landing right after the check is not missed.
            if self._assign_waiter is None or self._assign_waiter.done():
                self._assign_waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._assign_waiter), left)
            except TimeoutError:
                pass

    async def _publish_and_wait(self, resource: Resource, request: bytes, headers, request_id: str,
                                deadline: float | None, wait: float | None) -> InferResult:
        assert self._loop is not None and self._producer is not None  # set by start()
        out_topic = resource.output_topic(self.namer)
        partitions = await self._partitions(resource, out_topic)
        group = self.group_id(resource.name)
        partition = random.choice(partitions)
        key = routing.composite_key(partition, resource.name, request_id)
        if key in self._pending:
            raise DuplicateRequest(f"a request with key {key} is already in flight")
        fut = self._loop.create_future()
        self._pending[key] = fut
        self._pending_where[key] = (resource, group, out_topic, partition)
        consumer = self._consumers.get(group)
        if consumer is not None:  # its answer is due: fetch its topic from now until it is here
            consumer.expect(out_topic)
        loop = self._loop
        size = len(request)

        def failed(exc: ProduceError) -> None:  # producer poll thread: the request was not delivered
            def fail() -> None:
                if not fut.done():
                    fut.set_exception(_produce_failure(exc, size))
            if not loop.is_closed():
                loop.call_soon_threadsafe(fail)

        try:
            try:
                in_topic = resource.input_topic(self.namer)
                if self.framer is not None:
                    request = await self.framer.aframe(in_topic, request)
                await self._producer.send(in_topic, request, key=key, partition=partition, headers=headers,
                                          on_error=failed)
            except ProduceError as exc:
                raise _produce_failure(exc, size) from None
            left = None if deadline is None else max(0.0, deadline - self._loop.time())
            try:
                return await asyncio.wait_for(fut, timeout=left)
            except TimeoutError:
                raise GatewayTimeout(f"no response for {key} within {wait:g}s") from None
        finally:
            self._pending.pop(key, None)
            self._pending_where.pop(key, None)
            if consumer is not None:
                consumer.stop_expecting(out_topic)

    # ---- assignment -----------------------------------------------------------------------------
    def _assigned_on_thread(self, _partitions) -> None:
        """Consumer thread, after an assignment: continue on the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_assigned)

    def _on_assigned(self) -> None:
        self._wake_partition_waiters()
        self._check_pending_partitions()

    def _wake_partition_waiters(self) -> None:
        waiter, self._assign_waiter = self._assign_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_pending_partitions(self) -> None:
        """After a (re)assignment: fail waits whose partition this gateway no longer owns."""
        for key, (_resource, group, topic, partition) in list(self._pending_where.items()):
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
                # Outputs may carry schema-registry framing (engine or model gateway configured with a
                # registry); a protobuf message never starts with byte 0, so stripping is always safe.
                batch.append((key, m.topic(), strip_schema_prefix(m.value() or b""), list(m.headers() or [])))
        if batch and self._loop is not None:
            self._loop.call_soon_threadsafe(self._complete, batch)

    def _complete(self, batch) -> None:
        for key, topic, value, headers in batch:
            where = self._pending_where.get(key)
            # A request's records carry the same key on every topic they pass: a pipeline's first
            # step writes it to the model's output topic too, which this gateway also reads when
            # that model is called directly. Only the awaited resource's output topic answers.
            if where is not None and where[2] != topic:
                continue
            fut = self._pending.get(key)
            if fut is None or fut.done():
                if fut is not None:
                    log.debug("Got duplicate request with key %s", key)
                continue
            fut.set_result(InferResult(key, value, headers, routing.error_message(headers, value)))
