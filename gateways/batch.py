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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TextIO, cast

import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition

from dataflow import headers as H
from dataflow.kafka import KafkaSettings, TopicNamer, poll_batch
from dataflow.kafka_produce import produce
from dataflow.oip import json as oip_json
from gateways import routing

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


def _raw_inputs(path: str, fmt: str) -> Iterator[tuple[int, str | None, str | None]]:
    """``(index, request text, id)`` per input record, read lazily; blank JSONL lines are skipped."""
    if fmt == "avro":
        try:
            with open(path, "rb") as f:
                for i, rec in enumerate(fastavro.reader(f)):
                    text = rec.get("request") if isinstance(rec, dict) else None
                    yield i, text, rec.get("id") if isinstance(rec, dict) else None
        except (OSError, ValueError) as exc:
            raise BatchError(f"cannot read Avro input {path}: {exc}") from exc
        return
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.strip():
                    yield i, line, None
    except OSError as exc:
        raise BatchError(f"cannot read input {path}: {exc}") from exc
    except UnicodeDecodeError:  # a binary or UTF-16 file: one error line, not a traceback
        raise BatchError(f"cannot read input {path}: not UTF-8 text (a binary or UTF-16 file?); "
                         f"the input must be JSON lines in UTF-8") from None


def read_inputs(path: str, fmt: str) -> Iterator[InputLine]:
    """The input requests in file order, parsed one at a time (the file is never held whole)."""
    for index, text, rid in _raw_inputs(path, fmt):
        yield _parse_line(index, text, rid, path)


def count_inputs(path: str, fmt: str) -> int:
    """How many requests the input holds; a read pass that fails the way ``read_inputs`` would,
    so an unreadable file is reported before anything is sent."""
    return sum(1 for _ in _raw_inputs(path, fmt))


def input_ids(path: str, fmt: str, indices: set[int]) -> dict[int, str | None]:
    """The ids of the input requests at ``indices``, in one pass that stops once all are found.

    Answers normally belong to requests in flight, whose ids the run keeps; this finds the ids of
    answers to requests an earlier, interrupted attempt sent."""
    found: dict[int, str | None] = {}
    if not indices:
        return found
    for index, text, rid in _raw_inputs(path, fmt):
        if index in indices:
            found[index] = _parse_line(index, text, rid, path).id
            if len(found) == len(indices):
                break
    return found


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


class AnsweredSet:
    """The input indices that have an answer (result or error), held as "every index below
    ``floor``" plus the answered indices above it, so a run's memory does not grow with the input
    when answers come back roughly in order."""

    def __init__(self, indices: Iterable[int] = ()) -> None:
        self.floor = 0
        self._above: set[int] = set()
        for index in indices:
            self.add(index)

    def add(self, index: int) -> None:
        if 0 <= index < self.floor:
            return
        self._above.add(index)
        while self.floor in self._above:
            self._above.discard(self.floor)
            self.floor += 1

    def __contains__(self, index: int) -> bool:
        return 0 <= index < self.floor or index in self._above

    def __len__(self) -> int:
        return self.floor + len(self._above)

    def __iter__(self) -> Iterator[int]:
        yield from range(self.floor)
        yield from self._above


@dataclass
class InFlight:
    id: str | None
    sent_at: float


class InputWindow:
    """Feeds input lines to the run at most ``size`` unanswered at a time.

    Lines are pulled from ``lines`` only when the window has room, lines already answered (found in
    the output files when resuming) are passed over, and of a sent line only its id and send time
    are kept until its answer arrives: the run holds at most ``size`` requests, whatever the input
    size."""

    def __init__(self, lines: Iterable[InputLine], answered: AnsweredSet, size: int) -> None:
        self._lines = iter(lines)
        self.answered = answered
        self.size = size
        self.in_flight: dict[int, InFlight] = {}
        self.exhausted = False

    def next_line(self) -> InputLine | None:
        """The next unanswered input line if the window has room, else None (full or exhausted)."""
        while not self.exhausted and len(self.in_flight) < self.size:
            line = next(self._lines, None)
            if line is None:
                self.exhausted = True
                break
            if line.index not in self.answered:
                return line
        return None

    def sent(self, line: InputLine, at: float) -> None:
        self.in_flight[line.index] = InFlight(line.id, at)

    def settle(self, index: int) -> None:
        """Record the answer to ``index`` (sent in this run or not)."""
        self.answered.add(index)
        self.in_flight.pop(index, None)

    @property
    def finished(self) -> bool:
        return self.exhausted and not self.in_flight

    def oldest_sent_at(self) -> float | None:
        return min((f.sent_at for f in self.in_flight.values()), default=None)


# ---- output --------------------------------------------------------------------------------------


class ResultWriter:
    """Appends result lines to one file (JSONL or Avro); ``existing`` holds the indices already
    present when it was opened (a torn last line or block is cut off first)."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.existing = AnsweredSet()
        self._records: list[dict] = []
        self._f: TextIO | None = None  # open for JSONL only; Avro blocks are written on flush
        if fmt == "avro":
            self._recover_avro()
        else:
            self._recover_jsonl()
            self._f = open(path, "a", encoding="utf-8")

    def _recover_jsonl(self) -> None:
        if not os.path.exists(self.path):
            return
        good = 0
        with open(self.path, "rb") as f:  # line by line: a resumed run's memory stays flat too
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn last line
                try:
                    self.existing.add(int(json.loads(line)["index"]))
                except (ValueError, KeyError, TypeError):
                    break
                good += len(line)
            size = f.seek(0, os.SEEK_END)
        if good != size:
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def _recover_avro(self) -> None:
        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return
        kept = []
        try:
            with open(self.path, "rb") as f:
                for rec in fastavro.reader(f):
                    kept.append(cast(dict[str, Any], rec))  # OUTPUT_SCHEMA is a record: each reads as a dict
        except Exception:
            pass
        self.existing = AnsweredSet(int(r["index"]) for r in kept)
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
            assert self._f is not None  # a JSONL writer opens its file when created
            self._f.write(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self.fmt == "avro":
            if not self._records:
                return

            schema = fastavro.parse_schema(OUTPUT_SCHEMA)
            exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
            with open(self.path, "a+b" if exists else "wb") as f:
                fastavro.writer(f, schema, self._records)
                f.flush()
                os.fsync(f.fileno())
            self._records = []
        else:
            assert self._f is not None  # a JSONL writer opens its file when created
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


class RequestSender:
    """Produces requests to the pipeline's input topic under the gateway's composite key
    (partition = index mod partitions), waiting while the producer's queue is full."""

    def __init__(self, producer: Producer, topic: str, pipeline: str, run_id: str, partitions: int) -> None:
        self.producer, self.topic, self.pipeline = producer, topic, pipeline
        self.run_id, self.partitions = run_id, partitions

    def key_of(self, index: int) -> str:
        return routing.composite_key(index % self.partitions, self.pipeline, f"{self.run_id}-{index}")

    def send(self, index: int, request: bytes) -> None:
        headers = [(H.PIPELINE, self.pipeline.encode()),
                   (H.REQUEST_ID, f"{self.run_id}-{index}".encode())]
        produce(self.producer, self.topic, request, key=self.key_of(index),
                partition=index % self.partitions, headers=headers)


class AnswerWriter:
    """Matches messages on the output topic to input indices by key and writes each first answer
    to the results or errors file; later answers to the same index are counted as duplicates."""

    def __init__(self, job: BatchJob, in_fmt: str, run_id: str, window: InputWindow,
                 results: ResultWriter, errors: ResultWriter, summary: BatchSummary) -> None:
        self.input, self.in_fmt = job.input, in_fmt
        self.key_prefix = f".{job.pipeline}.{run_id}-"
        self.window, self.results, self.errors, self.summary = window, results, errors, summary

    def match(self, msg) -> tuple[int, str] | None:
        """``(index, key)`` if ``msg`` answers a request of this run, else None."""
        if msg.error() or msg.key() is None:
            return None
        key = msg.key().decode("utf-8", "replace")
        pos = key.find(self.key_prefix)
        if pos < 0:
            return None
        try:
            return int(key[pos + len(self.key_prefix):]), key
        except ValueError:
            return None

    def handle(self, msgs) -> None:
        """Write the answers among ``msgs`` as they arrive."""
        for msg in msgs:
            matched = self.match(msg)
            if matched is None:
                continue
            index, key = matched
            if index in self.window.answered:
                self.summary.duplicates += 1
                continue
            sent = self.window.in_flight.get(index)
            rid = sent.id if sent is not None else input_ids(self.input, self.in_fmt, {index}).get(index)
            self.write(index, key, rid, msg)

    def handle_earlier(self, msgs) -> None:
        """Write answers to requests an earlier attempt sent, looking their ids up in one input pass."""
        first: dict[int, tuple[str, object]] = {}
        for msg in msgs:
            matched = self.match(msg)
            if matched is None:
                continue
            index, key = matched
            if index in self.window.answered or index in first:
                self.summary.duplicates += 1
                continue
            first[index] = (key, msg)
        ids = input_ids(self.input, self.in_fmt, set(first))
        for index, (key, msg) in first.items():
            self.write(index, key, ids.get(index), msg)

    def write(self, index: int, key: str, rid: str | None, msg) -> None:
        err = routing.error_message(list(msg.headers() or []), msg.value())
        rec: dict[str, object] = {"index": index, "id": rid, "key": key}
        if err is None:
            try:
                rec["response"] = oip_json.response_to_json(msg.value() or b"")
            except oip_json.OipJsonError as exc:
                err = f"undecodable pipeline output: {exc}"
        if err is None:
            self.results.write(rec)
            self.summary.scored += 1
        else:
            rec["error"] = err
            self.errors.write(rec)
            self.summary.errors += 1
        self.window.settle(index)

    def write_bad_request(self, line: InputLine, key: str, problem: str) -> None:
        self.errors.write({"index": line.index, "id": line.id, "key": key, "error": f"bad request: {problem}"})
        self.summary.errors += 1
        self.window.settle(line.index)

    def flush(self) -> None:
        self.results.flush()
        self.errors.flush()


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
            answered = AnsweredSet(chain(results.existing, errors.existing))
            summary.already_done = len(answered)
            summary.total = count_inputs(job.input, self.in_fmt)
            window = InputWindow(read_inputs(job.input, self.in_fmt), answered, job.max_in_flight)
            answers = AnswerWriter(job, self.in_fmt, run_id, window, results, errors, summary)
            sender = RequestSender(producer, in_topic, job.pipeline, run_id, partitions)
            progress = Progress(summary.total, enabled=job.progress)
            start = time.monotonic()
            if state.get("resumed"):  # answers that arrived while a previous attempt was down
                self._drain(consumer, answers.handle_earlier)
            self._score(window, sender, consumer, answers, summary, progress)
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
            except Exception:
                pass

    def _score(self, window: InputWindow, sender: RequestSender, consumer: Consumer,
               answers: AnswerWriter, summary: BatchSummary, progress: Progress) -> None:
        """Send while the window has room and write answers as they come, until every request is
        answered, the ``stop_after`` hook fires, or the oldest request times out."""
        job = self.job
        last_flush = time.monotonic()
        while True:
            self._send_while_room(window, sender, answers, summary)
            sender.producer.poll(0)
            answers.handle(poll_batch(consumer, 1000, 0.02))
            now = time.monotonic()
            if now - last_flush > 0.5:
                answers.flush()
                last_flush = now
            done = summary.already_done + summary.scored + summary.errors
            progress.update(done, summary.errors)
            if job.on_progress:
                job.on_progress(done)
            if job.stop_after is not None and summary.scored + summary.errors >= job.stop_after:
                summary.interrupted = True
                return
            if window.finished:
                return
            self._check_timeout(window, now, sender.producer)

    @staticmethod
    def _send_while_room(window: InputWindow, sender: RequestSender, answers: AnswerWriter,
                         summary: BatchSummary) -> None:
        """Send input lines until the window is full; a line that is not a valid request is answered
        at once with a "bad request" error and takes no room."""
        while (line := window.next_line()) is not None:
            try:
                if line.body is None:
                    raise oip_json.OipJsonError(line.problem or "bad line")
                req = oip_json.request_from_json(line.body)
            except oip_json.OipJsonError as exc:
                answers.write_bad_request(line, sender.key_of(line.index), str(exc))
                continue
            sender.send(line.index, req.SerializeToString())
            window.sent(line, time.monotonic())
            summary.resent += 1

    def _check_timeout(self, window: InputWindow, now: float, producer: Producer) -> None:
        oldest = window.oldest_sent_at()
        if oldest is not None and now - oldest > self.job.request_timeout_s:
            producer.flush(5)
            raise BatchError(
                f"{len(window.in_flight)} request(s) unanswered after {self.job.request_timeout_s:g}s "
                f"(first index {min(window.in_flight)}); results so far are saved: rerun the same command to resume")

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
