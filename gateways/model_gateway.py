"""Model gateway (spec 6, 3.9): ``model.<m>.inputs`` -> OIP server -> ``model.<m>.outputs`` / errors.

For every served model: its two topics are created if missing, its input topic is consumed in
group ``modelgateway_group_id(m)`` (one consumer per group bucket, ``auto.offset.reset=earliest``),
and each record is sent to the model's OIP server with at most ``workers`` calls in flight per
model and a per-request timeout. The answer goes to ``model.<m>.outputs`` with the same key and
partition number; a failure goes to the errors topic with ``seldon-pipeline-errors: <m>``.
Offsets are committed only once every earlier record's output was delivered (at-least-once), in
one commit per consumer at most every ``commit_interval_s`` (a commit per record was a broker
request per record).

Everything runs on one asyncio loop: a consumer thread hands each polled batch to the loop, calls
go out on one gRPC channel (or HTTP session) per model server (``ClientPool``), outputs are
produced from the loop and their delivery reports commit offsets from the producer's thread.
Failing fast: a record whose caller has given up (header ``dataflow-deadline-ms`` in the past) is
answered with an error without calling the model, a call never outlives that deadline, and a
model server that cannot be reached opens its circuit (``oip_client.CircuitBreaker``) so that the
records queued for it fail at once instead of each waiting for retries.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import TopicPartition
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from dataflow import headers as H
from dataflow.kafka import KafkaSettings, TopicNamer, ensure_topics, modelgateway_group_id
from dataflow.schema_registry import Framer

from gateways import oip_json
from gateways.kafka_io import AsyncProducer, TopicSetConsumer
from gateways.metrics import ModelMetrics, ModelSeries
from gateways.oip_client import ClientPool, InferError, OipClient

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8  # MODELGATEWAY_NUM_WORKERS
DEFAULT_TIMEOUT_S = 120.0  # MODELGATEWAY_WORKER_TIMEOUT_MS
MAX_NUM_CONSUMERS = 100  # MODELGATEWAY_MAX_NUM_CONSUMERS
COMMIT_INTERVAL_S = 1.0  # as the engine's runtimes (Kafka Streams: 30 s at-least-once)
SCHEMA_MAGIC = 0


def strip_schema_prefix(value: bytes) -> bytes:
    """Drop Confluent schema-registry framing (0x00 + 4-byte id + 1 index byte) if present (spec 2.1)."""
    if len(value) >= 6 and value[0] == SCHEMA_MAGIC:
        return value[6:]
    return value


INFER_TYPE_JSON_REQUEST = "json/inferModelRequest"
INFER_TYPE_JSON_RESPONSE = "json/inferModelResponse"
INFER_TYPE_PROTO_REQUEST = "proto/InferModelRequest"
INFER_TYPE_PROTO_RESPONSE = "proto/InferModelResponse"


def _parse_proto_request(value: bytes) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest()
    req.ParseFromString(value)
    return req


def _parse_proto_response(value: bytes) -> pb.ModelInferRequest:
    resp = pb.ModelInferResponse()
    resp.ParseFromString(value)
    return oip_json.response_to_request(resp)


def _parse_json(value: bytes) -> pb.ModelInferRequest:
    try:
        body = oip_json._load(value)
    except oip_json.OipJsonError:
        raise InferError("value is neither an OIP protobuf message nor OIP JSON") from None
    if "inputs" not in body and "outputs" in body:  # a JSON response used as a request
        body = dict(body, inputs=body["outputs"])
        body.pop("outputs")
    try:
        return oip_json.request_from_json(body, keep_id=True)
    except oip_json.OipJsonError as exc:
        raise InferError(str(exc)) from None


def parse_model_input(value: bytes, infer_type: str | None = None) -> pb.ModelInferRequest:
    """A record value as a ``ModelInferRequest``.

    With a ``seldon-infer-type`` hint the value is read as that type; without one (the normal
    case): protobuf request, else protobuf response, else REST JSON (spec 6).
    """
    value = strip_schema_prefix(value or b"")
    try:
        if infer_type is not None:
            if infer_type == INFER_TYPE_PROTO_REQUEST:
                return _parse_proto_request(value)
            if infer_type == INFER_TYPE_PROTO_RESPONSE:
                return _parse_proto_response(value)
            if infer_type in (INFER_TYPE_JSON_REQUEST, INFER_TYPE_JSON_RESPONSE):
                return _parse_json(value)
            raise InferError(f"Header {H.INFER_TYPE} with unknown type {infer_type}")
        for parse in (_parse_proto_request, _parse_proto_response):
            try:
                return parse(value)
            except DecodeError:
                pass
        return _parse_json(value)
    except DecodeError as exc:
        raise InferError(f"value is not a valid {infer_type}: {exc}") from None


def outgoing_metadata(headers: list[tuple[str, bytes]], model: str) -> list[tuple[str, str]]:
    """Record ``x-*`` headers except ``x-seldon-route``, plus ``seldon-model: <model>`` (spec 6)."""
    md = [(k.lower(), v.decode("utf-8", "replace")) for k, v in headers
          if k.lower().startswith("x-") and k.lower() != H.SELDON_ROUTE]
    md.append((H.SELDON_MODEL, model))
    return md


def output_headers(headers: list[tuple[str, bytes]], response_headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Input headers + response ``x-*`` headers whose name is not already present."""
    present = {k for k, _ in headers}
    return list(headers) + [(k, v) for k, v in response_headers if k not in present]


def deadline_left(headers: list[tuple[str, bytes]], now_s: float) -> float | None:
    """Seconds until the caller's deadline (header ``dataflow-deadline-ms``; <= 0: passed), or None
    if the record carries none (or an unreadable one)."""
    raw = H.first(headers, H.DEADLINE)
    if raw is None:
        return None
    try:
        return int(raw) / 1000 - now_s
    except ValueError:
        return None


def error_headers(headers: list[tuple[str, bytes]], model: str) -> list[tuple[str, bytes]]:
    return list(headers) + [(H.PIPELINE_ERRORS, model.encode())]


class OffsetTracker:
    """Per partition: the next offset safe to commit while records complete out of order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, int], set[int]] = {}
        self._highest: dict[tuple[str, int], int] = {}

    def start(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self._inflight.setdefault((topic, partition), set()).add(offset)

    def done(self, topic: str, partition: int, offset: int) -> int | None:
        with self._lock:
            tp = (topic, partition)
            s = self._inflight.get(tp)
            if s is None or offset not in s:
                return None
            s.discard(offset)
            self._highest[tp] = max(offset, self._highest.get(tp, -1))
            return min(s) if s else self._highest[tp] + 1

    def forget(self, partitions) -> None:
        with self._lock:
            for tp in partitions:
                self._inflight.pop((tp.topic, tp.partition), None)
                self._highest.pop((tp.topic, tp.partition), None)


@dataclass
class _Served:
    name: str
    endpoint: str
    client: OipClient
    semaphore: asyncio.Semaphore
    series: ModelSeries
    tasks: set = field(default_factory=set)


class ModelGateway:
    def __init__(self, settings: KafkaSettings, namer: TopicNamer | None = None, *, consumer_prefix: str = "",
                 workers: int = DEFAULT_WORKERS, timeout_s: float = DEFAULT_TIMEOUT_S, partitions: int = 1,
                 replication: int = 1, max_num_consumers: int = MAX_NUM_CONSUMERS, model_version: str = "",
                 framer: Framer | None = None, metrics: ModelMetrics | None = None,
                 commit_interval_s: float = COMMIT_INTERVAL_S) -> None:
        self.settings = settings
        self.metrics = metrics or ModelMetrics()
        self.framer = framer  # schema-registry framing of model outputs; None: raw values
        self.namer = namer or TopicNamer()
        self.consumer_prefix = consumer_prefix
        self.workers = workers
        self.timeout_s = timeout_s
        self.partitions = partitions
        self.replication = replication
        self.max_num_consumers = max_num_consumers
        self.commit_interval_s = commit_interval_s
        self.clients = ClientPool()
        # The reference pins model_version "1"; MLServer rejects versions it does not have, so by
        # default the request's own (usually empty) version is sent. Set to "1" to match exactly.
        self.model_version = model_version
        self._models: dict[str, _Served] = {}
        self._consumers: dict[str, TopicSetConsumer] = {}
        self._trackers: dict[str, OffsetTracker] = {}
        self._producer: AsyncProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.processed = 0
        self.failed = 0
        self.expired = 0  # records answered with an error because their caller had given up
        self._closing = False

    async def start(self) -> "ModelGateway":
        self._loop = asyncio.get_running_loop()
        self._producer = AsyncProducer(self.settings)
        return self

    async def close(self) -> None:
        self._closing = True
        for name in list(self._models):
            await self.remove_model(name, drain=False)
        await asyncio.gather(*(asyncio.to_thread(c.close) for c in self._consumers.values()))
        self._consumers.clear()
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close)

    def models(self) -> dict[str, str]:
        return {m: s.endpoint for m, s in self._models.items()}

    def group_id(self, model: str) -> str:
        return modelgateway_group_id(model, self.consumer_prefix, self.namer.namespace, self.max_num_consumers)

    async def add_model(self, name: str, endpoint: str) -> None:
        """Serve ``name`` at ``endpoint`` (``grpc://h:p`` or ``http://h:p``); idempotent, endpoint may change."""
        current = self._models.get(name)
        if current is not None and current.endpoint == endpoint:
            return
        topics = [self.namer.model_inputs(name), self.namer.model_outputs(name)]
        await asyncio.to_thread(ensure_topics, self.settings, topics, self.partitions, self.replication,
                                require_equal=False)
        served = _Served(name, endpoint, self.clients.acquire(endpoint), asyncio.Semaphore(self.workers),
                         self.metrics.model(name))
        old = self._models.get(name)
        self._models[name] = served
        if old is not None:
            await self.clients.release(old.endpoint)
        group = self.group_id(name)
        consumer = self._consumers.get(group)
        if consumer is None:
            tracker = OffsetTracker()
            consumer = TopicSetConsumer(self.settings, group, lambda msgs, g=group: self._on_records(g, msgs),
                                        offset_reset="earliest", on_revoke=tracker.forget, name=f"modelgw-{group}",
                                        commit_interval_s=self.commit_interval_s)
            self._consumers[group] = consumer
            self._trackers[group] = tracker
        consumer.add_topic(topics[0])
        log.info("serving model %s at %s", name, endpoint)

    async def remove_model(self, name: str, drain: bool = True) -> None:
        served = self._models.pop(name, None)
        if served is None:
            return
        consumer = self._consumers.get(self.group_id(name))
        if consumer is not None:
            consumer.remove_topic(self.namer.model_inputs(name))
        if drain and served.tasks:
            await asyncio.wait(served.tasks, timeout=self.timeout_s)
        await self.clients.release(served.endpoint)
        if name not in self._models:
            self.metrics.forget(name)
        log.info("stopped serving model %s", name)

    def wait_assigned(self, name: str, timeout_s: float = 30.0) -> bool:
        consumer = self._consumers.get(self.group_id(name))
        return bool(consumer and consumer.wait_partitions(self.namer.model_inputs(name), timeout_s))

    # ---- records --------------------------------------------------------------------------------
    def _model_of(self, topic: str) -> str | None:
        prefix = self.namer.model_topic("")
        if topic.startswith(prefix) and topic.endswith(".inputs"):
            return topic[len(prefix):-len(".inputs")]
        return None

    def _on_records(self, group: str, msgs) -> None:
        """Consumer thread: register offsets, then hand the records to the loop."""
        tracker = self._trackers[group]
        batch = []
        for m in msgs:
            tracker.start(m.topic(), m.partition(), m.offset())
            batch.append((m.topic(), m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or [])))
        # Backpressure: wait until the loop has scheduled them (bounded by per-model semaphores).
        fut = asyncio.run_coroutine_threadsafe(self._dispatch(group, batch), self._loop)
        while True:
            try:
                fut.result(timeout=1.0)
                return
            except concurrent.futures.TimeoutError:
                if self._closing or self._loop.is_closed():
                    fut.cancel()
                    return

    async def _dispatch(self, group: str, batch) -> None:
        for rec in batch:
            topic = rec[0]
            model = self._model_of(topic)
            served = self._models.get(model) if model else None
            if served is None:  # not served (any more): skip it, like the reference
                self._finish(group, rec)
                continue
            await served.semaphore.acquire()
            task = asyncio.create_task(self._handle(group, served, rec))
            served.tasks.add(task)
            task.add_done_callback(served.tasks.discard)

    async def _handle(self, group: str, served: _Served, rec) -> None:
        topic, partition, offset, key, value, headers = rec
        series = served.series
        series.in_flight.inc()
        started = time.perf_counter()
        try:
            try:
                timeout_s = self.timeout_s
                left = deadline_left(headers, time.time())
                if left is not None:
                    if left <= 0:
                        self.expired += 1
                        raise InferError(f"not sent to model {served.name}: the caller's deadline passed "
                                         f"{-left:.3f}s ago")
                    timeout_s = min(timeout_s, left)
                hint = H.first(headers, H.INFER_TYPE)
                req = parse_model_input(value, hint.decode("utf-8", "replace") if hint is not None else None)
                req.model_name = served.name
                req.model_version = self.model_version
                resp, resp_headers = await served.client.infer(req, outgoing_metadata(headers, served.name),
                                                               timeout_s)
                out_topic, out_value = self.namer.model_outputs(served.name), resp.SerializeToString()
                out_headers = output_headers(headers, resp_headers)
                self.processed += 1
                series.ok.inc()
            except InferError as exc:
                out_topic, out_value = self.namer.errors(), str(exc).encode()
                out_headers = error_headers(headers, served.name)
                self.failed += 1
                series.error.inc()
                log.debug("model %s failed for key %s: %s", served.name, key, exc)
            except Exception as exc:  # noqa: BLE001 - a bug must still answer the request
                log.exception("model %s: unexpected failure", served.name)
                out_topic, out_value = self.namer.errors(), str(exc).encode()
                out_headers = error_headers(headers, served.name)
                self.failed += 1
                series.error.inc()
            series.seconds.observe(time.perf_counter() - started)
            series.in_flight.dec()
            started = None
            if self.framer is not None:  # outputs only: the errors topic's text stays raw
                out_value = await self.framer.aframe(out_topic, out_value)
            self._producer.produce_cb(out_topic, out_value, key=key, partition=partition, headers=out_headers,
                                      on_delivery=lambda err, _m: self._delivered(group, rec, err))
        finally:
            if started is not None:   # cancelled before an outcome
                series.in_flight.dec()
            served.semaphore.release()

    def _delivered(self, group: str, rec, err) -> None:
        if err is not None:  # reference: delivery errors are only logged
            log.error("delivery of output for %s[%d]@%d failed: %s", rec[0], rec[1], rec[2], err)
        self._finish(group, rec)

    def _finish(self, group: str, rec) -> None:
        topic, partition, offset = rec[0], rec[1], rec[2]
        commit_at = self._trackers[group].done(topic, partition, offset)
        if commit_at is not None:
            self._consumers[group].commit([TopicPartition(topic, partition, commit_at)])
