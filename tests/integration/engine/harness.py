"""Test harness for the engine: PipelineUpdateMessages built as the scheduler builds them,
produce helpers, and a group-less collector that reads topics from the beginning."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from chainer_api import chainer_pb2
from dataflow.kafka import TopicNamer

Msg = chainer_pb2.PipelineUpdateMessage
Step = chainer_pb2.PipelineStepUpdate


def topic_ref(pipeline: str, topic: str, tensor: str | None = None) -> chainer_pb2.PipelineTopic:
    t = chainer_pb2.PipelineTopic(pipelineName=pipeline, topicName=topic)
    if tensor is not None:
        t.tensor = tensor
    return t


def step(pipeline: str, sources: list, sink: str, *, triggers: list = (), tensor_map: dict | None = None,
         join: int = Step.Inner, triggers_join: int = Step.Inner, join_window_ms: int | None = None,
         batch: tuple[int | None, int | None] | None = None) -> chainer_pb2.PipelineStepUpdate:
    """One step update. ``sources``/``triggers`` items: topic name, or (topic, tensor), or
    (pipelineName, topic, tensor) for references to another pipeline."""

    def ref(item):
        if isinstance(item, str):
            return topic_ref(pipeline, item)
        if len(item) == 2:
            return topic_ref(pipeline, item[0], item[1])
        return topic_ref(*item)

    u = Step(sources=[ref(s) for s in sources], triggers=[ref(t) for t in triggers],
             sink=topic_ref(pipeline, sink), inputJoinTy=join, triggersJoinTy=triggers_join)
    for k, v in (tensor_map or {}).items():
        u.tensorMap.add(pipelineName=pipeline, topicAndTensor=k, tensorName=v)
    if join_window_ms is not None:
        u.joinWindowMs = join_window_ms
    if batch is not None:
        size, window = batch
        if size is not None:
            u.batch.size = size
        if window is not None:
            u.batch.windowMs = window
    return u


def create_message(name: str, updates: list, namer: TopicNamer, *, version: int = 1, uid: str | None = None,
                   timestamp: int = 1, allow_cycles: bool = False, max_step_revisits: int = 0,
                   with_error_step: bool = True) -> Msg:
    """A Create like ``createPipelineCreationMessage``: steps + error step last."""
    msg = Msg(op=Msg.Create, pipeline=name, version=version, uid=uid or new_uid(),
              pipelineOutputTopic=namer.pipeline_outputs(name), pipelineErrorTopic=namer.errors(),
              allowCycles=allow_cycles, maxStepRevisits=max_step_revisits, timestamp=timestamp)
    msg.updates.extend(updates)
    if with_error_step:
        msg.updates.append(step(name, [namer.errors()], namer.pipeline_outputs(name)))
    return msg


def delete_message(create: Msg, *, timestamp: int | None = None, clean_topics: bool = False,
                   namer: TopicNamer | None = None) -> Msg:
    msg = Msg(op=Msg.Delete, pipeline=create.pipeline, version=create.version, uid=create.uid,
              timestamp=create.timestamp + 1 if timestamp is None else timestamp)
    if clean_topics and namer is not None:
        msg.updates.append(step(create.pipeline, [namer.pipeline_inputs(create.pipeline)],
                                namer.pipeline_outputs(create.pipeline)))
    return msg


def new_uid() -> str:
    return uuid.uuid4().hex[:20]


def new_namer(kafka) -> TopicNamer:
    """A namespace per test so topics never collide across tests in one broker session."""
    return TopicNamer(prefix="seldon", namespace=kafka.unique("ns"))


def produce(kafka, topic: str, records: list[tuple[str, bytes]], *, pipeline: str | None = None,
            partition: int | None = None, headers: list | None = None) -> None:
    p = kafka.producer()
    for key, value in records:
        hs = list(headers or [])
        if pipeline is not None:
            hs.append(("pipeline", pipeline.encode()))
        kw = {} if partition is None else {"partition": partition}
        p.produce(topic, value=value, key=key, headers=hs, **kw)
    assert p.flush(10) == 0


def collect(kafka, topic: str, count: int, timeout_s: float = 20.0, *, settle_s: float = 0.0):
    """Read ``topic`` from the beginning (all partitions, no group) until ``count`` records, then
    keep reading ``settle_s`` more to catch extras. Returns confluent-kafka messages."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = kafka.consumer()
    md = c.list_topics(topic, timeout=10)
    parts = md.topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(out) < count:
            out.extend(m for m in c.consume(100, 0.1) if m.error() is None)
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            out.extend(m for m in c.consume(100, 0.1) if m.error() is None)
    finally:
        c.close()
    return out


def committed_offset(kafka, group: str, topic: str, partition: int = 0) -> int:
    """The offset ``group`` has committed on ``topic[partition]`` (negative: none)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(kafka.settings.consumer(group))
    try:
        [tp] = c.committed([TopicPartition(topic, partition)], timeout=10)
        return tp.offset
    finally:
        c.close()


def join_message(kafka, name: str):
    """A version with one 2-way join step ``a, b -> c`` and no error step; (msg, a, b, sink)."""
    namer = new_namer(kafka)
    a, b, sink = namer.model_outputs("a"), namer.model_outputs("b"), namer.model_inputs("c")
    return create_message(name, [step(name, [a, b], sink)], namer, with_error_step=False), a, b, sink


def header(msg, name: str) -> bytes | None:
    for k, v in msg.headers() or ():
        if k == name:
            return v
    return None


# ------------------------------------------------------------------------------ engine process

REPO_ROOT = Path(__file__).resolve().parents[3]


class EngineProcess:
    """``dataflow engine`` as a child process (so it can be SIGKILLed), logging to a file."""

    def __init__(self, scheduler: str, kafka, *, name: str, state_dir: str, log_path: str,
                 extra: list[str] = ()):
        self.cmd = [sys.executable, "-m", "dataflow_cli", "--log-level", "INFO", "engine",
                    "--scheduler", scheduler, "--kafka", kafka.bootstrap, "--name", name,
                    "--state-dir", state_dir, *extra]
        self.log_path = log_path
        self.state_dir = state_dir
        self.name = name
        self.proc: subprocess.Popen | None = None

    def start(self) -> EngineProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=REPO_ROOT, stdout=log, stderr=log, start_new_session=True)
        log.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def deploy(fake, engine: EngineProcess, msg, timeout_s: float = 60.0):
    """Send a Create and wait for its ack; fail with the engine's log if it is not a success."""
    from dataflow_testing.fake_chainer import ack_for

    fake.send(msg)
    try:
        ack = fake.wait_ack(ack_for(msg.uid, Msg.Create, msg.timestamp), timeout_s)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- engine log ---\n{engine.log_tail()}") from None
    assert ack.success, f"create failed: {ack.reason}\n--- engine log ---\n{engine.log_tail()}"
    return ack
