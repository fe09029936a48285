"""KafkaRunner's checkpoint without a broker: state changes go to the changelog and are delivered with
the outputs before offsets are committed, and reach the local database only after that; a
retriable delivery failure rolls state back and rewinds to the last commit instead of committing."""
from __future__ import annotations

from confluent_kafka import Message

from chainer_api import chainer_pb2
from dataflow.kafka import KafkaSettings
from dataflow.records import Record
from dataflow.runtime import producers
from dataflow.runtime.base import RuntimeConfig
from dataflow.runtime.kafka_runtime import KafkaRunner, RunnerLoop
from dataflow.runtime.tasks import PartitionTasks
from dataflow.state.partition import MemoryBackend, PartitionState


class FakeConsumer:
    def __init__(self):
        self.calls = []

    def commit(self, offsets, asynchronous):
        self.calls.append(("commit", [(tp.topic, tp.partition, tp.offset) for tp in offsets]))

    def seek(self, tp):
        self.calls.append(("seek", (tp.topic, tp.partition, tp.offset)))


class FakeProducer:
    def __init__(self, order):
        self.order = order

    def produce(self, topic, value, key, partition, **kw):
        self.order.append(("produce", topic, partition, key, value))

    def flush(self, timeout):
        self.order.append("flush")
        return 0


class RecordingBackend(MemoryBackend):
    def __init__(self, order):
        super().__init__()
        self.order = order

    def write(self, changes):
        self.order.append(("write", sorted(changes)))
        super().write(changes)


class OneStore:
    """A pipeline whose only step writes its input value to state."""

    source_topics = all_topics = frozenset({"t"})

    def __init__(self, factory):
        self.store = factory("s")

    def process(self, record, now_ms):
        self.store.put(b"k", record.value)
        return []

    def punctuate(self, now_ms):
        return []


class FakeFailure:
    def retriable(self):
        return True


class FakeMsg:
    def topic(self):
        return "t"


def make_loop():
    msg = chainer_pb2.PipelineUpdateMessage(pipeline="p", version=1, uid="u")
    runner = KafkaRunner(msg, RuntimeConfig(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1")))
    runner.changelog_topic = "cl"
    order = []
    tasks = PartitionTasks(OneStore, lambda p: PartitionState(RecordingBackend(order), p))
    tasks.assign([0])
    loop = RunnerLoop(runner, tasks, partitions={}, source_topics=frozenset({"t"}))  # clients come with open()
    loop.consumer, loop.producer = FakeConsumer(), FakeProducer(order)
    loop.consumer.calls = order
    return loop, order


def test_checkpoint_order_changelog_then_delivery_then_offsets_then_database():
    loop, order = make_loop()
    loop.tasks.get(0).pipeline.store.put(b"k", b"v")
    loop.committed = {("t", 0): 5}
    loop.offsets = {("t", 0): 9}
    loop.dirty = True
    assert loop._commit()
    assert order == [("produce", "cl", 0, b"s\x00k", b"v"), "flush", ("commit", [("t", 0, 9)]),
                     ("write", [b"s\x00k"])]
    assert loop.committed == {("t", 0): 9} and not loop.dirty


def test_retriable_delivery_failure_rewinds_instead_of_committing():
    loop, order = make_loop()
    loop.committed = {("t", 0): 5}
    loop.offsets = {("t", 0): 9}
    loop.dirty = True
    before = loop.tasks.get(0).pipeline
    before.store.put(b"k", b"v")
    loop._on_delivery(FakeFailure(), FakeMsg())
    assert not loop._commit()
    assert order[-1] == ("seek", ("t", 0, 5)) and "write" not in [o[0] for o in order]
    assert loop.offsets == {} and loop.retriable_failures == 0 and loop.committed == {("t", 0): 5}
    assert loop.tasks.get(0).pipeline is not before                 # processors rebuilt
    assert loop.tasks.get(0).pipeline.store.get(b"k") is None       # over the last checkpoint


class Forward:
    """A stateless pipeline sending each record on to topic ``out``."""

    source_topics = all_topics = frozenset({"t", "out"})

    def __init__(self, factory):
        pass

    def process(self, record, now_ms):
        return [Record("out", record.key, record.value, record.headers, record.timestamp)]

    def punctuate(self, now_ms):
        return []


def test_a_record_the_shared_producer_could_not_deliver_is_not_committed_past():
    """Through a real librdkafka producer as runners get it (shared, failure-only delivery
    reports, the runners' linger): an output that never reaches a broker (none listens; it times
    out in the producer) reaches this runner's callback, and the checkpoint rewinds to the last
    commit instead of committing the input's offset."""
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", extra=(("log_level", "0"), ("message.timeout.ms", "300")))
    runner = KafkaRunner(chainer_pb2.PipelineUpdateMessage(pipeline="p", version=1, uid="u"),
                         RuntimeConfig(kafka=settings))
    tasks = PartitionTasks(Forward, None)
    tasks.assign([0])
    loop = RunnerLoop(runner, tasks, partitions={"t": 1, "out": 1}, source_topics=frozenset({"t"}))
    loop.consumer = FakeConsumer()
    loop.producer = producers.acquire(settings, 1_000_000)
    try:
        loop.committed = {("t", 0): 5}
        record = Message(topic="t", partition=0, offset=5, key=b"0.k", value=b"v", headers=[("pipeline", b"p")],
                         timestamp=(1, 1))
        assert loop._process([record]) == 1
        assert loop.offsets == {("t", 0): 6}
        assert not loop._commit()                                   # flush: the delivery failed
        assert loop.consumer.calls == [("seek", ("t", 0, 5))]       # rewound, nothing committed
        assert loop.committed == {("t", 0): 5} and loop.offsets == {} and loop.retriable_failures == 0
    finally:
        producers.release(loop.producer, 1.0)
        loop.producer = None
