"""Model gateway: ``model.<m>.inputs`` -> OIP server -> ``model.<m>.outputs`` / errors.

For every served model: its two topics are created if missing, its input topic is consumed in
group ``modelgateway_group_id(m)`` (one consumer per group bucket, ``auto.offset.reset=earliest``),
and each record is sent to the model's OIP server with at most ``workers`` calls in flight per
model and a per-request timeout. The answer goes to ``model.<m>.outputs`` with the same key and
partition number; a failure goes to the errors topic with ``seldon-pipeline-errors: <m>``.
Offsets are committed only once every earlier record's output was delivered (at-least-once), in
one commit per consumer at most every ``commit_interval_s`` (a commit per record was a broker
request per record).

Batching: records of one model that wait together (a polled batch, or what queued while every
worker was busy) go as one call of up to ``max_batch`` records, stacked on the first dimension
(``model_batch``), and each record gets its own part of the answer. A lone record goes at once,
so this costs a sequential caller nothing, and under load it saves most of the per-call cost of
the gateway and the model server. Stacking is only right for a model whose first dimension is the
batch, so by default (``batching="auto"``) a model is batched only once its server's metadata
declares a variable first dimension on every input and output; ``"always"`` batches every model,
``"off"`` none.

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
import functools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from confluent_kafka import TopicPartition
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from dataflow import headers as H
from dataflow.kafka import KafkaSettings, TopicNamer, ensure_topics, modelgateway_group_id
from dataflow.oip import json as oip_json
from dataflow.oip import response_as_request, strip_schema_prefix
from dataflow.schema_registry import Framer
from gateways import model_batch, model_metadata
from gateways.kafka_io import AsyncProducer, TopicSetConsumer
from gateways.metrics import ModelMetrics, ModelSeries
from gateways.oip_client import ClientPool, InferError, OipClient

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8  # MODELGATEWAY_NUM_WORKERS
DEFAULT_TIMEOUT_S = 120.0  # MODELGATEWAY_WORKER_TIMEOUT_MS
MAX_NUM_CONSUMERS = 100  # MODELGATEWAY_MAX_NUM_CONSUMERS
COMMIT_INTERVAL_S = 1.0  # as the engine's runtimes (Kafka Streams: 30 s at-least-once)
DEFAULT_MAX_BATCH = 32  # MODELGATEWAY_MAX_BATCH: records per call at most, for models batched
BATCHING_MODES = ("auto", "always", "off")  # MODELGATEWAY_BATCHING
DEFAULT_BATCHING = "auto"
# auto: a model's metadata is asked again after a failure (server not up yet), less and less often.
METADATA_RETRY_S = 2.0
METADATA_RETRY_MAX_S = 60.0


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
    return response_as_request(resp)


def _parse_json(value: bytes) -> pb.ModelInferRequest:
    try:
        body = oip_json.load_object(value)
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
    case): protobuf request, else protobuf response, else REST JSON (as the reference's model gateway).
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
    """Record ``x-*`` headers except ``x-seldon-route``, plus ``seldon-model: <model>`` (as the reference)."""
    md = [(k.lower(), v.decode("utf-8", "replace")) for k, v in headers
          if k.lower().startswith("x-") and k.lower() != H.SELDON_ROUTE]
    md.append((H.SELDON_MODEL, model))
    return md


def output_headers(headers: list[tuple[str, bytes]],
                   response_headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
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
    """One served model: its records waiting for a worker, and the calls in flight."""
    name: str
    endpoint: str
    client: OipClient
    series: ModelSeries
    queue: deque = field(default_factory=deque)   # (group, record) not yet sent
    busy: int = 0                                 # calls (single or batched) in flight
    batch: int = 1                                # records per call at most (1: not batched)
    learning: asyncio.Task | None = None          # asking the server whether it batches
    space: asyncio.Event = field(default_factory=asyncio.Event)  # set when the queue shrank
    tasks: set = field(default_factory=set)
    removed: bool = False


@dataclass
class _Call:
    group: str
    rec: tuple
    req: pb.ModelInferRequest | None = None
    metadata: list = field(default_factory=list)
    timeout_s: float = 0.0
    outcome: tuple | None = None   # (topic, value, headers, ok)


class ModelGateway:
    def __init__(self, settings: KafkaSettings, namer: TopicNamer | None = None, *, consumer_prefix: str = "",
                 workers: int = DEFAULT_WORKERS, timeout_s: float = DEFAULT_TIMEOUT_S, partitions: int = 1,
                 replication: int = 1, max_num_consumers: int = MAX_NUM_CONSUMERS, model_version: str = "",
                 framer: Framer | None = None, metrics: ModelMetrics | None = None,
                 commit_interval_s: float = COMMIT_INTERVAL_S, max_batch: int = DEFAULT_MAX_BATCH,
                 batching: str = DEFAULT_BATCHING, metadata_fetcher=model_metadata.fetch) -> None:
        if batching not in BATCHING_MODES:
            raise ValueError(f"batching must be one of {', '.join(BATCHING_MODES)}, got {batching!r}")
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
        # Records of one model waiting together go as one call of up to ``max_batch`` (see the
        # module docstring); ``batching`` says for which models.
        self.max_batch = max_batch
        self.batching = batching
        self._fetch_metadata = metadata_fetcher
        self.clients = ClientPool()
        # The reference pins model_version "1"; MLServer rejects versions it does not have, so by
        # default the request's own (usually empty) version is sent. Set to "1" to match exactly.
        self.model_version = model_version
        self._models: dict[str, _Served] = {}
        self._retiring: set[asyncio.Task] = set()  # endpoints replaced, finishing their calls
        self._consumers: dict[str, TopicSetConsumer] = {}
        self._trackers: dict[str, OffsetTracker] = {}
        self._producer: AsyncProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.expired = 0  # records answered with an error because their caller had given up
        self._closing = False

    async def start(self) -> ModelGateway:
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

    def records_per_call(self, name: str) -> int:
        """How many waiting records of model ``name`` may go as one call now (1: not batched)."""
        served = self._models.get(name)
        return served.batch if served is not None else 1

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
        served = _Served(name, endpoint, self.clients.acquire(endpoint), self.metrics.model(name))
        if self.max_batch > 1 and self.batching == "always":
            served.batch = self.max_batch
        elif self.max_batch > 1 and self.batching == "auto":
            served.learning = asyncio.create_task(self._learn_batching(served))
        old = self._models.get(name)
        self._models[name] = served
        if old is not None:  # waiting records move to the new endpoint; calls in flight finish
            self._stop_learning(old)
            served.queue.extend(old.queue)
            old.queue.clear()
            old.removed = True
            old.space.set()
            self._pump(served)
            task = asyncio.create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        group = self.group_id(name)
        consumer = self._consumers.get(group)
        if consumer is None:
            tracker = OffsetTracker()
            consumer = TopicSetConsumer(self.settings, group, functools.partial(self._on_records, group),
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
        served.removed = True
        self._stop_learning(served)
        served.space.set()
        if not drain:
            served.queue.clear()  # never committed: read again by whoever serves the model next
        await self._retire(served)
        if name not in self._models:
            self.metrics.forget(name)
        log.info("stopped serving model %s", name)

    async def _learn_batching(self, served: _Served) -> None:
        """Batch ``served`` once its server's metadata declares a batch dimension (asked again,
        less and less often, while the server does not answer)."""
        delay = METADATA_RETRY_S
        while not served.removed:
            try:
                meta = await self._fetch_metadata(served.endpoint, served.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("model %s: no metadata from %s yet (%s)", served.name, served.endpoint, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, METADATA_RETRY_MAX_S)
                continue
            if model_batch.declares_batch_dimension(meta):
                served.batch = self.max_batch
                log.info("model %s declares a batch dimension: up to %d records per call",
                         served.name, self.max_batch)
            else:
                log.info("model %s declares no batch dimension: one call per record", served.name)
            return

    @staticmethod
    def _stop_learning(served: _Served) -> None:
        if served.learning is not None and not served.learning.done():
            served.learning.cancel()

    async def _retire(self, served: _Served) -> None:
        """Let ``served``'s calls (and what is still queued) finish, then release its client."""
        assert self._loop is not None  # set by start()
        deadline = self._loop.time() + self.timeout_s
        while served.tasks and self._loop.time() < deadline:
            await asyncio.wait(set(served.tasks), timeout=deadline - self._loop.time())
        await self.clients.release(served.endpoint)

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
        assert self._loop is not None  # set by start()
        tracker = self._trackers[group]
        batch = []
        for m in msgs:
            tracker.start(m.topic(), m.partition(), m.offset())
            batch.append((m.topic(), m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or [])))
        # Backpressure: wait until the loop has queued them (bounded per model, see _dispatch).
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
        """Queue the records, then start calls: records polled together can go as one call."""
        queued: dict[int, _Served] = {}
        for rec in batch:
            model = self._model_of(rec[0])
            while True:
                served = self._models.get(model) if model else None
                if served is None:  # not served (any more): skip it, like the reference
                    self._finish(group, rec)
                    break
                if len(served.queue) >= self.workers * served.batch:
                    self._pump(served)  # full: start what free workers can take
                if len(served.queue) < self.workers * served.batch:
                    served.queue.append((group, rec))
                    queued[id(served)] = served
                    break
                served.space.clear()  # still full: wait for room (or for the model to go or move)
                await served.space.wait()
        for served in queued.values():
            self._pump(served)

    def _pump(self, served: _Served) -> None:
        """Start calls while workers are free: each takes what is waiting, up to ``served.batch``."""
        while served.queue and served.busy < self.workers:
            n = min(served.batch, len(served.queue))
            items = [served.queue.popleft() for _ in range(n)]
            served.busy += 1
            task = asyncio.create_task(self._handle(served, items))
            served.tasks.add(task)
            task.add_done_callback(served.tasks.discard)
            served.space.set()

    def _prepare(self, served: _Served, call: _Call) -> None:
        """Parse the record into ``call.req``, or settle its outcome (unreadable, caller gone)."""
        _topic, _partition, _offset, _key, value, headers = call.rec
        try:
            call.timeout_s = self.timeout_s
            left = deadline_left(headers, time.time())
            if left is not None:
                if left <= 0:
                    self.expired += 1
                    raise InferError(f"not sent to model {served.name}: the caller's deadline passed "
                                     f"{-left:.3f}s ago")
                call.timeout_s = min(call.timeout_s, left)
            hint = H.first(headers, H.INFER_TYPE)
            req = parse_model_input(value, hint.decode("utf-8", "replace") if hint is not None else None)
            req.model_name = served.name
            req.model_version = self.model_version
            call.req, call.metadata = req, outgoing_metadata(headers, served.name)
        except Exception as exc:
            self._settle_error(served, call, exc)

    def _settle_error(self, served: _Served, call: _Call, exc: Exception) -> None:
        if not isinstance(exc, InferError):
            log.error("model %s: unexpected failure", served.name, exc_info=exc)
        else:
            log.debug("model %s failed for key %s: %s", served.name, call.rec[3], exc)
        call.outcome = (self.namer.errors(), str(exc).encode(), error_headers(call.rec[5], served.name), False)

    def _settle(self, served: _Served, call: _Call, resp, resp_headers) -> None:
        call.outcome = (self.namer.model_outputs(served.name), resp.SerializeToString(),
                        output_headers(call.rec[5], resp_headers), True)

    async def _call_one(self, served: _Served, call: _Call) -> None:
        try:
            resp, resp_headers = await served.client.infer(call.req, call.metadata, call.timeout_s)
            self._settle(served, call, resp, resp_headers)
        except Exception as exc:
            self._settle_error(served, call, exc)

    async def _call_batch(self, served: _Served, calls: list[_Call]) -> None:
        """One call for all of ``calls`` if their requests stack; else (or if the batch fails for
        a reason one member may cause) one call each, so a bad request fails only itself."""
        merged = model_batch.merge([c.req for c in calls])
        if merged is not None:
            common = [kv for kv in calls[0].metadata if all(kv in c.metadata for c in calls[1:])]
            try:
                resp, resp_headers = await served.client.infer(merged, common, min(c.timeout_s for c in calls))
            except InferError as exc:
                if exc.whole_batch:  # unreachable / timed out: every member would get the same
                    for c in calls:
                        self._settle_error(served, c, exc)
                    return
            except Exception:
                log.exception("model %s: batched call failed; calling one by one", served.name)
            else:
                parts = model_batch.split(resp, [c.req for c in calls])
                if parts is not None:
                    for c, part in zip(calls, parts):
                        self._settle(served, c, part, resp_headers)
                    return
                log.debug("model %s: batched answer cannot be split; calling one by one", served.name)
        await asyncio.gather(*(self._call_one(served, c) for c in calls))

    async def _handle(self, served: _Served, items) -> None:
        series = served.series
        series.in_flight.inc(len(items))
        started = time.perf_counter()
        calls = [_Call(group, rec) for group, rec in items]
        settled = False
        try:
            for call in calls:
                self._prepare(served, call)
            todo = [c for c in calls if c.outcome is None]
            try:
                if len(todo) == 1:
                    await self._call_one(served, todo[0])
                elif todo:
                    await self._call_batch(served, todo)
            except Exception as exc:
                for c in todo:
                    if c.outcome is None:
                        self._settle_error(served, c, exc)
            took = time.perf_counter() - started
            series.in_flight.dec(len(items))
            settled = True
            assert self._producer is not None  # set by start()
            for call in calls:
                assert call.outcome is not None  # every call was settled above
                out_topic, out_value, out_headers, ok = call.outcome
                series.seconds.observe(took)
                if ok:
                    series.ok.inc()
                else:
                    series.error.inc()
                if self.framer is not None:  # outputs only: the errors topic's text stays raw
                    out_value = await self.framer.aframe(out_topic, out_value)
                await self._producer.produce_cb(
                    out_topic, out_value, key=call.rec[3], partition=call.rec[1], headers=out_headers,
                    on_delivery=lambda err, _m, g=call.group, r=call.rec: self._delivered(g, r, err))
        finally:
            if not settled:   # cancelled before an outcome
                series.in_flight.dec(len(items))
            served.busy -= 1
            self._pump(served)

    def _delivered(self, group: str, rec, err) -> None:
        if err is not None:  # reference: delivery errors are only logged
            log.error("delivery of output for %s[%d]@%d failed: %s", rec[0], rec[1], rec[2], err)
        self._finish(group, rec)

    def _finish(self, group: str, rec) -> None:
        topic, partition, offset = rec[0], rec[1], rec[2]
        commit_at = self._trackers[group].done(topic, partition, offset)
        if commit_at is not None:
            self._consumers[group].commit([TopicPartition(topic, partition, commit_at)])
