"""The Kafka runner's direct routes without a broker: chain-step records queued straight from the
consumed message give the records ``process`` gives, in the order of their inputs, whichever
path each record takes."""
from __future__ import annotations

import numpy as np
from confluent_kafka import Message

from dataflow import oip
from dataflow.headers import normalise
from dataflow.kafka import CLUSTER_PROFILE, KafkaSettings, TopicNamer, partition_for_key
from dataflow.records import Record
from dataflow.runtime.base import RuntimeConfig
from dataflow.runtime.kafka_runtime import KafkaRunner, RunnerLoop
from dataflow.runtime.tasks import PartitionTasks
from dataflow.state.memory import MemoryStore
from dataflow.topology import compile_pipeline
from scheduler_min.convert import pipeline_message

NAMER = TopicNamer(prefix="seldon", namespace="default")
SPEC = {"name": "p", "steps": [{"name": "m1"},
                               {"name": "m2", "inputs": ["m1"], "tensorMap": {"m1.outputs.OUTPUT0": "INPUT0"}}]}
SOURCE, SINK, ERRORS = NAMER.model_outputs("m1"), NAMER.model_inputs("m2"), NAMER.errors()


class RecordingProducer:
    def __init__(self):
        self.records = []

    def produce(self, topic, value, key, partition, on_delivery=None, callback=None, timestamp=0, headers=None):
        if isinstance(key, str):
            key = key.encode()
        self.records.append((topic, partition, key, value, timestamp, list(headers or ())))


def make_loop():
    msg = pipeline_message(SPEC, uid="u", namer=NAMER)
    runner = KafkaRunner(msg, RuntimeConfig(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1",
                                                                profile=CLUSTER_PROFILE)))
    tasks = PartitionTasks(runner._build, None)
    tasks.assign({0, 1, 2})
    loop = RunnerLoop(runner, tasks, {SOURCE: 3, SINK: 3, ERRORS: 3}, frozenset([SOURCE]))
    loop.producer = RecordingProducer()  # type: ignore[assignment]
    return loop, msg


def response(ident, n=8):
    return oip.make_response({"OUTPUT0": np.arange(n, dtype=np.float32).reshape(1, n)}, raw=True,
                             id=ident).SerializeToString()


def test_direct_and_general_records_come_out_as_process_makes_them_in_input_order():
    loop, msg = make_loop()
    inputs = [  # (key, value, headers): most take the direct route; some the general path
        (b"0.p.a", response("a"), [("pipeline", b"p")]),
        (b"1.p.b", response("b"), [("pipeline", b"p"), ("x-request-id", b"b")]),
        (b"2.p.c", response("c"), [("pipeline", b"p"), ("traceparent", None)]),     # a header without value
        (b"0.p.d", b"\x00not a response", [("pipeline", b"p")]),                      # malformed: error record
        ("1.p.\u00e9".encode() + b"\xff", response("e"), [("pipeline", b"p")]),       # a key that is not ASCII
        (b"2.p.f", response("f", 300), [("pipeline", b"p")]),
        (None, response("g"), [("pipeline", b"p")]),
        (b"0.p.h", response("h"), [("pipeline", b"other")]),                          # another pipeline's
        (b"1.p.i", response("i"), [("pipeline", b"p")]),
    ]
    msgs = [Message(topic=SOURCE, partition=i % 3, offset=i, key=k, value=v, headers=h, timestamp=(1, 100 + i))
            for i, (k, v, h) in enumerate(inputs)]
    produced = loop._process(msgs)

    reference = compile_pipeline(msg, store_factory=MemoryStore)
    expected = []
    for i, (k, v, h) in enumerate(inputs):
        record = Record(SOURCE, k.decode("utf-8", "replace") if k is not None else None, v, normalise(h), 100 + i,
                        i % 3)
        for r in reference.process(record, 0):
            key = r.key.encode() if r.key is not None else None
            expected.append((r.topic, partition_for_key(r.key, 3), key, r.value, r.timestamp, r.headers))
    assert loop.producer.records == expected  # type: ignore[union-attr]
    assert produced == len(expected) == 8
    assert loop.offsets == {(SOURCE, 0): 7, (SOURCE, 1): 8, (SOURCE, 2): 9}
    steps = loop.tasks.tasks
    consumed = sum(t.pipeline.stats.consumed for t in steps.values())
    assert consumed == reference.stats.consumed and \
        sum(t.pipeline.stats.produced for t in steps.values()) == reference.stats.produced


def test_join_arrivals_through_the_runner_give_what_process_gives():
    spec = {"name": "p", "steps": [{"name": "a"}, {"name": "b"}, {"name": "j", "inputs": ["a", "b"]}]}
    msg = pipeline_message(spec, uid="u", namer=NAMER)
    runner = KafkaRunner(msg, RuntimeConfig(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1",
                                                                profile=CLUSTER_PROFILE)))
    a, b, sink = NAMER.model_outputs("a"), NAMER.model_outputs("b"), NAMER.model_inputs("j")
    from dataflow.state.partition import memory_partition_state
    tasks = PartitionTasks(runner._build, memory_partition_state)
    tasks.assign({0})
    loop = RunnerLoop(runner, tasks, {a: 1, b: 1, sink: 1, ERRORS: 1}, frozenset([a, b]))
    loop.producer = RecordingProducer()  # type: ignore[assignment]
    inputs = [(a, b"0.p.x", response("x")), (a, b"0.p.y", response("y")), (b, b"0.p.x", response("x2", 3)),
              (b, b"0.p.z", b"\x00bad"), (b, b"0.p.y", response("y2", 3)), (a, b"0.p.x", response("x3"))]
    msgs = [Message(topic=t, partition=0, offset=i, key=k, value=v, headers=[("pipeline", b"p")],
                    timestamp=(1, 100 + i)) for i, (t, k, v) in enumerate(inputs)]
    loop._process(msgs)

    stores: dict[str, MemoryStore] = {}
    reference = compile_pipeline(msg, store_factory=lambda n: stores.setdefault(n, MemoryStore(n)))
    expected = []
    for i, (t, k, v) in enumerate(inputs):
        for r in reference.process(Record(t, k.decode(), v, [("pipeline", b"p")], 100 + i, 0), 0):
            expected.append((r.topic, 0, r.key.encode(), r.value, r.timestamp, r.headers))
    assert loop.producer.records == expected  # type: ignore[union-attr]
    assert [r[0] for r in expected] == [sink, ERRORS, sink, sink]   # x, the bad record, y, x again
