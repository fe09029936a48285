"""Asynchronous batch scoring through a pipeline's Kafka topics (``dataflow pipeline batch``).

Requests (OIP REST JSON, like the body of ``POST /v2/models/<p>/infer``) are read from a JSONL
file (one request per line) or an Avro container file, produced to ``pipeline.<p>.inputs`` with
at most ``max_in_flight`` unanswered, and matched by Kafka key on ``pipeline.<p>.outputs``.
Results and errors go to two separate files, in completion order, each line carrying the
request's input index.

Formats
  JSONL in:   ``{"inputs": [...], ...}`` per line (blank lines are skipped but keep their index).
  Avro in:    records of ``INPUT_SCHEMA``: ``{"id": null|string, "request": "<OIP JSON text>"}``.
  JSONL out:  ``{"index": i, "id": ..., "key": ..., "response": {OIP JSON}}``; errors file
              ``{"index": i, "id": ..., "key": ..., "error": "<model> : <text>"}``.
  Avro out:   records of ``OUTPUT_SCHEMA`` (response/error as JSON text / plain text).

Keys are ``<p>.<pipeline>.<runId>-<index>`` (the gateway's composite-key shape, partition p =
index mod partitions), headers ``pipeline=<pipeline>`` and ``x-request-id=<runId>-<index>``.

Resume: a state file ``<output>.state.json`` keeps the run id and the output topic's start
offsets. Re-running the same command reuses them: indices already in the result/error files are
skipped, answers that arrived on the topic while the run was down are collected first, only
the still-missing requests are re-sent, and any late duplicate answer is dropped by key, so no
request appears twice in the output. A torn last line (crash mid-write) is cut off.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from confluent_kafka import Consumer, Producer, TopicPartition

from dataflow import headers as H
from dataflow.kafka import KafkaSettings, TopicNamer
from dataflow.kafka_produce import produce
from dataflow.oip import json as oip_json

from gateways import routing
from gateways.kafka_io import poll_batch

INPUT_SCHEMA = {
    "type": "record", "name": "InferenceRequestLine", "namespace": "io.dataflow.batch",
    "doc": "One OIP inference request: 'request' is the REST JSON body as text.",
    "fields": [
        {"name": "id", "type": ["null", "string"], "default": None},
        {"name": "request", "type": "string"},
    ],
}
OUTPUT_SCHEMA = {
    "type": "record", "name": "InferenceResultLine", "namespace": "io.dataflow.batch",
    "doc": "The answer to input record 'index': response (OIP JSON text) or error (text).",
    "fields": [
        {"name": "index", "type": "long"},
        {"name": "id", "type": ["null", "string"], "default": None},
        {"name": "key", "type": "string"},
        {"name": "response", "type": ["null", "string"], "default": None},
        {"name": "error", "type": ["null", "string"], "default": None},
    ],
}
FORMATS = ("jsonl", "avro")


class BatchError(RuntimeError):
    """A user-facing problem with the batch run (files, topics, unanswered requests)."""


@dataclass
class BatchSummary:
    total: int = 0  # input requests
    already_done: int = 0  # found in the output files at start
    scored: int = 0  # answered in this run (results)
    errors: int = 0  # answered with an error in this run (incl. bad input lines)
    duplicates: int = 0  # late duplicate answers dropped
    resent: int = 0  # requests produced in this run
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def throughput(self) -> float:
        return (self.scored + self.errors) / self.seconds if self.seconds > 0 else 0.0


def detect_format(path: str, given: str | None) -> str:
    if given:
        if given not in FORMATS:
            raise BatchError(f"unknown format {given!r}: use one of {', '.join(FORMATS)}")
        return given
    return "avro" if path.endswith(".avro") else "jsonl"


def default_errors_path(output: str) -> str:
    root, ext = os.path.splitext(output)
    return f"{root}.errors{ext or '.jsonl'}"


def state_path(output: str) -> str:
    return output + ".state.json"


# ---- input ---------------------------------------------------------------------------------------


@dataclass
class InputLine:
    index: int
    id: str | None
    body: dict | None  # None: the line is not a JSON object (reported as an error)
    problem: str | None = None


def read_inputs(path: str, fmt: str) -> Iterator[InputLine]:
    if fmt == "avro":
        import fastavro

        try:
            with open(path, "rb") as f:
                for i, rec in enumerate(fastavro.reader(f)):
                    text = rec.get("request") if isinstance(rec, dict) else None
                    yield _parse_line(i, text, rec.get("id") if isinstance(rec, dict) else None, path)
        except (OSError, ValueError) as exc:
            raise BatchError(f"cannot read Avro input {path}: {exc}") from exc
        return
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.strip():
                    yield _parse_line(i, line, None, path)
    except OSError as exc:
        raise BatchError(f"cannot read input {path}: {exc}") from exc
    except UnicodeDecodeError:  # a binary or UTF-16 file: one error line, not a traceback
        raise BatchError(f"cannot read input {path}: not UTF-8 text (a binary or UTF-16 file?); "
                         f"the input must be JSON lines in UTF-8") from None


def _parse_line(index: int, text: str | None, rid: str | None, path: str) -> InputLine:
    try:
        body = json.loads(text or "")
    except ValueError as exc:
        return InputLine(index, rid, None, f"{path} line {index + 1}: not valid JSON: {exc}")
    if not isinstance(body, dict):
        return InputLine(index, rid, None, f"{path} line {index + 1}: expected a JSON object")
    if rid is None and isinstance(body.get("id"), str):
        rid = body["id"]
    return InputLine(index, rid, body)


# ---- output --------------------------------------------------------------------------------------


class ResultWriter:
    """Appends result lines to one file (JSONL or Avro); ``done()`` lists indices already present."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.existing: set[int] = set()
        self._records: list[dict] = []
        if fmt == "avro":
            self._recover_avro()
            self._f = None
        else:
            self._recover_jsonl()
            self._f = open(path, "a", encoding="utf-8")

    def _recover_jsonl(self) -> None:
        if not os.path.exists(self.path):
            return
        good = 0
        with open(self.path, "rb") as f:
            data = f.read()
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn last line
            try:
                self.existing.add(int(json.loads(line)["index"]))
            except (ValueError, KeyError, TypeError):
                break
            good += len(line)
        if good != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def _recover_avro(self) -> None:
        import fastavro

        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return
        kept = []
        try:
            with open(self.path, "rb") as f:
                for rec in fastavro.reader(f):
                    kept.append(rec)
        except Exception:  # noqa: BLE001 - a torn block: keep what was readable
            pass
        self.existing = {int(r["index"]) for r in kept}
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            fastavro.writer(f, fastavro.parse_schema(OUTPUT_SCHEMA), kept)
        os.replace(tmp, self.path)

    def write(self, record: dict) -> None:
        if self.fmt == "avro":
            self._records.append({
                "index": record["index"], "id": record.get("id"), "key": record["key"],
                "response": json.dumps(record["response"], separators=(",", ":")) if "response" in record else None,
                "error": record.get("error")})
        else:
            self._f.write(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self.fmt == "avro":
            if not self._records:
                return
            import fastavro

            schema = fastavro.parse_schema(OUTPUT_SCHEMA)
            exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
            with open(self.path, "a+b" if exists else "wb") as f:
                fastavro.writer(f, schema, self._records)
                f.flush()
                os.fsync(f.fileno())
            self._records = []
        else:
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self.flush()
        if self._f is not None:
            self._f.close()


# ---- progress ------------------------------------------------------------------------------------


class Progress:
    def __init__(self, total: int, stream=None, enabled: bool = True) -> None:
        self.total, self.stream, self.enabled = total, stream or sys.stderr, enabled
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, done: int, errors: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.25):
            return
        self._last = now
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        rate = done / max(now - self.start, 1e-9)
        self.stream.write(f"\r[{bar:<30}] {done}/{self.total} ({errors} errors) {rate:,.0f} req/s")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# ---- the run -------------------------------------------------------------------------------------


@dataclass
class BatchJob:
    pipeline: str
    input: str
    output: str
    errors: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    max_in_flight: int = 100
    request_timeout_s: float = 120.0
    progress: bool = True
    # test hook: stop (as if interrupted) once this many answers were written in this run
    stop_after: int | None = None
    on_progress: Callable[[int], None] | None = field(default=None, repr=False)


class BatchRun:
    def __init__(self, job: BatchJob, settings: KafkaSettings, namer: TopicNamer | None = None) -> None:
        if job.max_in_flight < 1:
            raise BatchError(f"--max-in-flight must be at least 1, got {job.max_in_flight}")
        self.job = job
        self.settings = settings
        self.namer = namer or TopicNamer()
        self.in_fmt = detect_format(job.input, job.input_format)
        self.out_fmt = detect_format(job.output, job.output_format)
        self.errors_path = job.errors or default_errors_path(job.output)

    # state ------------------------------------------------------------------------------------
    def _load_state(self, partitions: int, consumer: Consumer, out_topic: str) -> dict:
        path = state_path(self.job.output)
        if os.path.exists(path):
            try:
                with open(path) as f:
                    state = json.load(f)
            except (OSError, ValueError) as exc:
                raise BatchError(f"cannot read batch state {path}: {exc} (delete it to start over)") from exc
            if state.get("pipeline") != self.job.pipeline:
                raise BatchError(f"{path} belongs to a batch run of pipeline {state.get('pipeline')!r}, "
                                 f"not {self.job.pipeline!r}: use another --output or delete the state file")
            state["resumed"] = True
            return state
        starts = {}
        for p in range(partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(out_topic, p), timeout=10, cached=False)
            starts[str(p)] = high
        state = {"pipeline": self.job.pipeline, "run_id": routing.new_request_id(), "input": self.job.input,
                 "output_start_offsets": starts}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return state

    def _partitions(self, admin_consumer: Consumer, topic: str) -> int:
        md = admin_consumer.list_topics(topic, timeout=10)
        tm = md.topics.get(topic)
        if tm is None or tm.error is not None or not tm.partitions:
            raise BatchError(f"topic {topic} does not exist: is pipeline {self.job.pipeline} loaded?")
        return len(tm.partitions)

    # main loop --------------------------------------------------------------------------------
    def run(self) -> BatchSummary:
        job = self.job
        summary = BatchSummary()
        in_topic = self.namer.pipeline_inputs(job.pipeline)
        out_topic = self.namer.pipeline_outputs(job.pipeline)
        consumer = Consumer(self.settings.consumer(f"dataflow-batch-{routing.new_request_id()}",
                                                   offset_reset="earliest"))
        producer = Producer(self.settings.producer())
        results = ResultWriter(job.output, self.out_fmt)
        errors = ResultWriter(self.errors_path, self.out_fmt)
        try:
            partitions = self._partitions(consumer, in_topic)
            out_partitions = self._partitions(consumer, out_topic)
            state = self._load_state(out_partitions, consumer, out_topic)
            run_id = state["run_id"]
            starts = state.get("output_start_offsets", {})
            consumer.assign([TopicPartition(out_topic, p, int(starts.get(str(p), 0))) for p in range(out_partitions)])
            done = results.existing | errors.existing
            summary.already_done = len(done)
            ids: dict[int, str | None] = {}
            key_prefix = f".{job.pipeline}.{run_id}-"

            def key_of(index: int) -> str:
                return routing.composite_key(index % partitions, job.pipeline, f"{run_id}-{index}")

            def handle(msgs) -> int:
                n = 0
                for m in msgs:
                    if m.error() or m.key() is None:
                        continue
                    key = m.key().decode("utf-8", "replace")
                    pos = key.find(key_prefix)
                    if pos < 0:
                        continue
                    try:
                        index = int(key[pos + len(key_prefix):])
                    except ValueError:
                        continue
                    if index in done:
                        summary.duplicates += 1
                        continue
                    hdrs = list(m.headers() or [])
                    err = routing.error_message(hdrs, m.value())
                    rec = {"index": index, "id": ids.get(index), "key": key}
                    if err is None:
                        try:
                            rec["response"] = oip_json.response_to_json(m.value() or b"")
                        except oip_json.OipJsonError as exc:
                            err = f"undecodable pipeline output: {exc}"
                    if err is None:
                        results.write(rec)
                        summary.scored += 1
                    else:
                        rec["error"] = err
                        errors.write(rec)
                        summary.errors += 1
                    done.add(index)
                    inflight.pop(index, None)
                    n += 1
                return n

            inflight: dict[int, float] = {}
            lines = list(read_inputs(job.input, self.in_fmt))
            summary.total = len(lines)
            for line in lines:
                ids[line.index] = line.id
            progress = Progress(summary.total, enabled=job.progress)
            start = time.monotonic()
            # 1. answers that arrived while a previous attempt was down
            if state.get("resumed"):
                self._drain(consumer, handle)
            todo = iter([ln for ln in lines if ln.index not in done])
            exhausted = False
            last_flush = time.monotonic()
            while True:
                while not exhausted and len(inflight) < job.max_in_flight:
                    line = next(todo, None)
                    if line is None:
                        exhausted = True
                        break
                    if line.index in done:
                        continue
                    key = key_of(line.index)
                    try:
                        if line.body is None:
                            raise oip_json.OipJsonError(line.problem or "bad line")
                        req = oip_json.request_from_json(line.body)
                    except oip_json.OipJsonError as exc:
                        errors.write({"index": line.index, "id": line.id, "key": key, "error": f"bad request: {exc}"})
                        summary.errors += 1
                        done.add(line.index)
                        continue
                    headers = [(H.PIPELINE, job.pipeline.encode()),
                               (H.REQUEST_ID, f"{run_id}-{line.index}".encode())]
                    produce(producer, in_topic, req.SerializeToString(), key=key,
                            partition=line.index % partitions, headers=headers)
                    inflight[line.index] = time.monotonic()
                    summary.resent += 1
                producer.poll(0)
                handle(poll_batch(consumer, 1000, 0.02))
                now = time.monotonic()
                if now - last_flush > 0.5:
                    results.flush()
                    errors.flush()
                    last_flush = now
                answered = summary.already_done + summary.scored + summary.errors
                progress.update(answered, summary.errors)
                if job.on_progress:
                    job.on_progress(answered)
                if job.stop_after is not None and summary.scored + summary.errors >= job.stop_after:
                    summary.interrupted = True
                    break
                if exhausted and not inflight:
                    break
                if inflight and now - min(inflight.values()) > job.request_timeout_s:
                    producer.flush(5)
                    raise BatchError(
                        f"{len(inflight)} request(s) unanswered after {job.request_timeout_s:g}s "
                        f"(first index {min(inflight)}); results so far are saved: rerun the same command to resume")
            progress.update(summary.already_done + summary.scored + summary.errors, summary.errors, force=True)
            progress.finish()
            summary.seconds = time.monotonic() - start
            producer.flush(10)
            return summary
        except KeyboardInterrupt:
            summary.interrupted = True
            return summary
        finally:
            results.close()
            errors.close()
            try:
                consumer.close()
            except Exception:  # noqa: BLE001
                pass

    @staticmethod
    def _drain(consumer: Consumer, handle, quiet_s: float = 1.0) -> None:
        """Read what is already on the output topic (answers to an earlier attempt)."""
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            msgs = poll_batch(consumer, 1000, 0.1)
            if msgs:
                handle(msgs)
                last = time.monotonic()


def format_summary(s: BatchSummary) -> str:
    head = "interrupted" if s.interrupted else "done"
    return (f"{head}: {s.scored} scored, {s.errors} errors in {s.seconds:.1f}s "
            f"({s.throughput:,.0f} req/s); {s.already_done} already done before this run, "
            f"{s.duplicates} duplicate answers dropped, {s.total} requests in input")
