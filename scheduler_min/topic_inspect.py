"""``pipeline inspect``: show the last records of a pipeline's topics, as ``seldon pipeline inspect`` does.

Topic selection follows the pipeline's steps as the scheduler reports them; each topic is read
from the tail with a throwaway consumer (manual assignment, no group join). Values are decoded
as ``ModelInferResponse`` on ``*.outputs`` topics and ``ModelInferRequest`` elsewhere, with raw
contents expanded into typed contents. The error topic carries plain text and is shown as text.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from google.protobuf import json_format

from chainer_api import scheduler_pb2
from dataflow import oip
from dataflow.headers import PIPELINE

INPUTS, OUTPUTS = "inputs", "outputs"
FORMAT_RAW, FORMAT_JSON = "raw", "json"
DEFAULT_MAX_MESSAGE_SIZE = 1000000000


class InspectError(RuntimeError):
    """A user-facing inspect failure (bad expression, unknown step, Kafka error)."""


@dataclass
class InspectTarget:
    pipeline: str
    topics: list[str]
    tensor: str = ""


@dataclass
class InspectMessage:
    key: str
    value: str | None     # JSON text, the raw text when the value is not a message, None: no such tensor
    value_is_json: bool
    headers: list[tuple[str, str]] | None = None


@dataclass
class InspectTopic:
    name: str
    msgs: list[InspectMessage] = field(default_factory=list)


def _has_step(status: scheduler_pb2.PipelineStatusResponse, step: str) -> bool:
    return any(s.name == step for s in status.versions[-1].pipeline.steps)


def select_topics(expr: str, status: scheduler_pb2.PipelineStatusResponse, namespace: str,
                  prefix: str) -> InspectTarget:
    """Map ``p`` / ``p.inputs|outputs`` / ``p.s`` / ``p.s.inputs|outputs[.T]`` to topics."""
    parts = expr.split(".")
    base = f"{prefix}.{namespace}"
    p = parts[0]

    def model(step: str, io: str) -> str:
        return f"{base}.model.{step}.{io}"

    def need_step(step: str) -> None:
        if not _has_step(status, step):
            raise InspectError(f"Failed to find step with name {step} in pipeline {p}")

    if len(parts) == 1:
        topics = []
        for s in status.versions[-1].pipeline.steps:
            topics += [model(s.name, INPUTS), model(s.name, OUTPUTS)]
        topics += [f"{base}.pipeline.{p}.{INPUTS}", f"{base}.pipeline.{p}.{OUTPUTS}", f"{base}.errors.errors"]
        return InspectTarget(p, topics)
    if len(parts) == 2:
        if parts[1] in (INPUTS, OUTPUTS):
            return InspectTarget(p, [f"{base}.pipeline.{p}.{parts[1]}"])
        need_step(parts[1])
        return InspectTarget(p, [model(parts[1], INPUTS), model(parts[1], OUTPUTS)])
    if len(parts) in (3, 4):
        need_step(parts[1])
        if parts[2] not in (INPUTS, OUTPUTS):
            raise InspectError(f"Need to specify either {INPUTS} or {OUTPUTS} for a step")
        return InspectTarget(p, [model(parts[1], parts[2])], parts[3] if len(parts) == 4 else "")
    raise InspectError(f"Bad pipeline specifier {expr}")


def consumer_config(bootstrap: str, extra: dict | None = None) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": f"seldon-cli-{random.getrandbits(62)}",
        "auto.offset.reset": "earliest",
        "message.max.bytes": DEFAULT_MAX_MESSAGE_SIZE,
    }
    conf.update(extra or {})
    return conf


def describe_config(conf: dict) -> str:
    """The reference's ``Using consumer config map[k:v ...]`` line (keys sorted, as Go prints maps)."""
    return "Using consumer config map[" + " ".join(f"{k}:{conf[k]}" for k in sorted(conf)) + "]"


def _to_json(msg) -> str:
    return json.dumps(json_format.MessageToDict(msg), separators=(",", ":"))


def _expand(msg):
    try:
        return oip.to_typed(msg)
    except oip.CodecError:
        return msg  # raw contents that do not match the declared shape: show them as they are


def render_value(topic: str, value: bytes | None, tensor: str, truncate: bool) -> tuple[str | None, bool]:
    """(text, is_json) for one record value; (None, False) when the selected tensor is absent."""
    data = value or b""
    if topic.endswith(".errors.errors"):
        return data.decode("utf-8", "replace"), False
    is_output = topic.endswith(OUTPUTS)
    try:
        msg = oip.parse_response(data) if is_output else oip.parse_request(data)
    except oip.CodecError:
        return data.decode("utf-8", "replace"), False
    msg = _expand(msg)
    tensors = msg.outputs if is_output else msg.inputs
    if truncate:
        for t in tensors:
            t.ClearField("contents")
        msg.ClearField("raw_output_contents" if is_output else "raw_input_contents")
    if tensor:
        for t in tensors:
            if t.name == tensor:
                return _to_json(t), True
        return None, False
    return _to_json(msg), True


def read_topic(conf: dict, topic: str, pipeline: str, offset: int, key: str, tensor: str, verbose: bool,
               truncate: bool, timeout_s: float) -> InspectTopic:
    """The last ``offset`` records of ``topic`` (over all partitions), filtered by pipeline and key."""
    out = InspectTopic(topic)
    consumer = Consumer({**conf, "enable.partition.eof": True, "enable.auto.commit": False,
                         "fetch.wait.max.ms": 10})
    try:
        try:
            md = consumer.list_topics(topic, timeout=max(1.0, timeout_s))
        except KafkaException as exc:
            raise InspectError(f"kafka error {exc.args[0]}") from None
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            return out  # topic does not exist (yet): nothing to show
        assignment, pending = [], set()
        for pid in tmd.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, pid), timeout=max(1.0, timeout_s))
            if high <= low:
                continue
            assignment.append(TopicPartition(topic, pid, max(low, high - offset)))
            pending.add(pid)
        if not assignment:
            return out
        consumer.assign(assignment)
        records = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise InspectError(f"kafka error {err}")
            records.append(msg)
        # Keep each partition's last `offset` records (the broker may report a stale end offset),
        # then the overall last `offset` by timestamp.
        by_part: dict[int | None, list] = {}
        for m in records:
            by_part.setdefault(m.partition(), []).append(m)
        kept = [m for ms in by_part.values() for m in ms[-offset:]]
        kept.sort(key=lambda m: (m.timestamp()[1], m.partition(), m.offset()))
        for m in kept[-offset:]:
            headers = [(k, (v or b"").decode("utf-8", "replace")) for k, v in (m.headers() or [])]
            names = [v for k, v in headers if k == PIPELINE]
            if not names:
                raise InspectError("No pipeline found in headers.")
            mkey = (m.key() or b"").decode("utf-8", "replace")
            if pipeline not in names or (key and mkey != key):
                continue
            text, is_json = render_value(topic, m.value(), tensor, truncate)
            out.msgs.append(InspectMessage(mkey, text, is_json, headers if verbose else None))
    finally:
        consumer.close()
    return out


def format_raw(topics: list[InspectTopic], verbose: bool) -> str:
    lines = []
    for t in topics:
        lines.append(f"Topic: {t.name}")
        for m in t.msgs:
            if verbose:
                grouped: dict[str, list[str]] = {}
                for k, v in m.headers or []:
                    grouped.setdefault(k, []).append(v)
                hdrs = "".join(f"\t{k}=[{' '.join(vs)}]" for k, vs in grouped.items())
                lines.append(f"{m.key}\t{m.value or ''}\t{hdrs}")
            else:
                lines.append(f"{m.key}\t{m.value or ''}")
        lines.append("----------------")
    return "\n".join(lines) + "\n"


def format_json(topics: list[InspectTopic]) -> str:
    doc: dict[str, list] = {"topics": []}
    for t in topics:
        msgs = None
        if t.msgs:
            msgs = []
            for m in t.msgs:
                headers: dict[str, list[str]] | None = None
                if m.headers is not None:
                    headers = {}
                    for k, v in m.headers:
                        headers.setdefault(k, []).append(v)
                value = json.loads(m.value) if m.value_is_json and m.value is not None else m.value
                msgs.append({"headers": headers, "key": m.key, "value": value})
        doc["topics"].append({"name": t.name, "msgs": msgs})
    return json.dumps(doc, separators=(",", ":")) + "\n"
