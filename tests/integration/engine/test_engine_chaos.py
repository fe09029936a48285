"""State when partitions move, end to end: engine processes are stopped, SIGKILLed and restarted
under steady load, so partitions (and their join buffers and pending batches) move between
replicas several times. Every request must be answered; duplicates are allowed (at-least-once)
but bounded by what was processed and not yet checkpointed when a replica died."""
from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from dataflow import oip
from dataflow.kafka import partition_for_key
from dataflow_testing.fake_chainer import FakeChainer
from tests.integration.engine.harness import EngineProcess, Msg, create_message, new_namer, step
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(600)

PARTITIONS = 6
RATE = 100                 # requests per second per pipeline
COMMIT_INTERVAL_S = 1.0    # the engine's default checkpoint interval


def response(name: str, i: int) -> bytes:
    return oip.make_response({name: np.asarray([i], dtype=np.int32)}).SerializeToString()


def request(i: int) -> bytes:
    return oip.make_request({"X": np.asarray([[i]], dtype=np.int32)}).SerializeToString()


class Sink:
    """Reads output topics from the beginning in a thread; tests wait on what it has seen."""

    def __init__(self, kafka, topics: list[str]):
        self.consumer = kafka.consumer()
        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(PARTITIONS)])
        self.messages: dict[str, list] = {t: [] for t in topics}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self.consumer.consume(500, 0.1):
                if m.error() is None:
                    with self._lock:
                        self.messages[m.topic()].append((m.key().decode(), m.value()))

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.messages[topic])

    def snapshot(self, topic: str) -> list:
        with self._lock:
            return list(self.messages[topic])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


class Load:
    """Steady requests to both pipelines: join pairs (a then b, same key) and batch rows."""

    def __init__(self, kafka, join_name, a, b, batch_name, batch_src):
        self.producer = kafka.producer()
        self.join_keys: list[str] = []
        self.batch_ids: list[int] = []
        self._args = (join_name, a, b, batch_name, batch_src)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def _run(self) -> None:
        join_name, a, b, batch_name, batch_src = self._args
        i, tick = 0, 0.05
        next_at = time.monotonic()
        while not self._stop.is_set():
            for _ in range(int(RATE * tick)):
                p = i % PARTITIONS
                key = f"{p}.{join_name}.k{i}"
                part = partition_for_key(key, PARTITIONS)
                for topic, name in ((a, "A"), (b, "B")):
                    self.producer.produce(topic, response(name, i), key, part,
                                          headers=[("pipeline", join_name.encode())])
                self.join_keys.append(key)
                bkey = f"{p}.{batch_name}.k{i}"
                self.producer.produce(batch_src, request(i), bkey, partition_for_key(bkey, PARTITIONS),
                                      headers=[("pipeline", batch_name.encode())])
                self.batch_ids.append(i)
                i += 1
            self.producer.poll(0)
            next_at += tick
            self._stop.wait(max(0.0, next_at - time.monotonic()))  # paces the load; ends at once on stop

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.producer.flush(30) == 0


def test_join_and_batch_lose_nothing_while_replicas_are_stopped_killed_and_restarted(kafka, tmp_path):
    fake = FakeChainer().start()
    n = new_namer(kafka)
    join_name, batch_name = "chaosj", "chaosb"
    a, b, join_sink = n.model_outputs("ca"), n.model_outputs("cb"), n.model_inputs("cj")
    batch_src, batch_sink = n.pipeline_inputs(batch_name), n.model_inputs("cm")
    join_msg = create_message(join_name, [step(join_name, [a, b], join_sink, join_window_ms=300_000)], n,
                              with_error_step=False)
    batch_msg = create_message(batch_name, [step(batch_name, [batch_src], batch_sink, batch=(2, 3000))], n,
                               with_error_step=False)
    kafka.create_topics(a, b, join_sink, batch_src, batch_sink, partitions=PARTITIONS)
    names = [kafka.unique(f"chaos{i}") for i in range(3)]
    runs = Counter()
    engines: dict[int, EngineProcess] = {}

    def start(i: int) -> None:
        runs[i] += 1
        engines[i] = EngineProcess(fake.target, kafka, name=names[i], state_dir=str(tmp_path / "state"),
                                   log_path=str(tmp_path / f"engine{i}-{runs[i]}.log"),
                                   extra=["--partitions", str(PARTITIONS)]).start()

    def creates_acked(i: int) -> int:
        return sum(1 for ack in fake.acks if ack.update.stream == names[i] and ack.update.op == Msg.Create
                   and ack.success)

    def logs() -> str:
        return "\n".join(f"--- {names[i]} ---\n{e.log_tail(15)}" for i, e in engines.items())

    def start_and_wait(i: int) -> None:
        before = creates_acked(i)
        start(i)
        wait_until(lambda: creates_acked(i) >= before + 2, 90, f"{names[i]} to run both pipelines", detail=logs)

    sink = Sink(kafka, [join_sink, batch_sink])
    load = None
    try:
        for i in range(3):
            start(i)
        for i in range(3):
            fake.wait_subscribed(names[i], 60)
        fake.send(join_msg)
        fake.send(batch_msg)
        for i in range(3):
            wait_until(lambda: creates_acked(i) >= 2, 90, f"{names[i]} to run both pipelines", detail=logs)  # noqa: B023  # called within this iteration
        load = Load(kafka, join_name, a, b, batch_name, batch_src).start()

        def progress(count: int = 300) -> None:
            target = sink.count(join_sink) + count
            wait_until(lambda: sink.count(join_sink) >= target, 120, f"{count} more join outputs", detail=logs)

        progress()
        engines[0].stop()                 # clean stop: its partitions move with their state
        progress()
        engines[1].kill()                 # crash: uncheckpointed work is redone elsewhere
        progress()
        start_and_wait(0)
        start_and_wait(1)
        progress()
        engines[2].kill()
        progress()
        start_and_wait(2)
        progress()
        load.stop()

        keys, ids = set(load.join_keys), set(load.batch_ids)

        def answered_ids() -> set[int]:
            out: set[int] = set()
            for _, value in sink.snapshot(batch_sink):
                out.update(int(x) for x in oip.request_arrays(oip.parse_request(value))["X"].ravel())
            return out

        wait_until(lambda: {k for k, _ in sink.snapshot(join_sink)} >= keys and answered_ids() >= ids, 120,
                   "every request to be answered", detail=logs)
        joined = Counter(k for k, _ in sink.snapshot(join_sink))
        batched = Counter(int(x) for _, v in sink.snapshot(batch_sink)
                          for x in oip.request_arrays(oip.parse_request(v))["X"].ravel())
        for _, v in sink.snapshot(join_sink):
            assert list(oip.request_arrays(oip.parse_request(v))) == ["A", "B"]
        duplicates = {"join": sum(joined.values()) - len(keys), "batch": sum(batched.values()) - len(ids)}
        print(f"requests: {len(keys)} joins, {len(ids)} batch rows; duplicates: {duplicates}")
        # Two SIGKILLs, each redoing at most what was processed since the last checkpoint (plus
        # what was in flight): a few commit intervals of load each.
        bound = 2 * 3 * COMMIT_INTERVAL_S * RATE
        assert duplicates["join"] <= bound and duplicates["batch"] <= bound, duplicates
    finally:
        if load is not None:
            load._stop.set()
        sink.close()
        for e in engines.values():
            e.stop()
        fake.stop()
