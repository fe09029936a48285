"""KafkaRunner's commit rule without a broker: outputs delivered and state flushed before offsets are
committed; a retriable delivery failure rewinds to the last commit instead of committing."""
from __future__ import annotations

from chainer_api import chainer_pb2
from dataflow.kafka import KafkaSettings
from dataflow.runtime.base import RuntimeConfig
from dataflow.runtime.kafka_runtime import KafkaRunner, _Loop, _TrackedStores
from dataflow.state import MemoryStore


class FakeConsumer:
    def __init__(self):
        self.calls = []

    def commit(self, offsets, asynchronous):
        self.calls.append(("commit", [(tp.topic, tp.partition, tp.offset) for tp in offsets]))

    def seek(self, tp):
        self.calls.append(("seek", (tp.topic, tp.partition, tp.offset)))


class FakeProducer:
    def __init__(self, loop):
        self.loop, self.calls = loop, []

    def flush(self, timeout):
        self.calls.append("flush")
        return 0


class FlushRecordingStore(MemoryStore):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def flush(self):
        self.log.append("store-flush")


class FakeFailure:
    def retriable(self):
        return True


class FakeMsg:
    def topic(self):
        return "t"


def make_loop():
    msg = chainer_pb2.PipelineUpdateMessage(pipeline="p", version=1, uid="u")
    runner = KafkaRunner(msg, RuntimeConfig(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1")))
    order = []
    stores = _TrackedStores(lambda name: FlushRecordingStore(order))
    stores("s")
    loop = _Loop(runner, pipeline=None, stores=stores, partitions={})
    loop.consumer.close()
    loop.consumer, loop.producer = FakeConsumer(), FakeProducer(loop)
    return loop, order


def test_commit_after_delivery_and_state_flush():
    loop, order = make_loop()
    loop.committed = {("t", 0): 5}
    loop.offsets = {("t", 0): 9}
    loop.dirty = True
    loop._commit()
    assert loop.producer.calls == ["flush"] and order == ["store-flush"]
    assert loop.consumer.calls == [("commit", [("t", 0, 9)])]
    assert loop.committed == {("t", 0): 9} and not loop.dirty


def test_retriable_delivery_failure_rewinds_instead_of_committing():
    loop, order = make_loop()
    loop.committed = {("t", 0): 5}
    loop.offsets = {("t", 0): 9}
    loop.dirty = True
    loop._on_delivery(FakeFailure(), FakeMsg())
    loop._commit()
    assert loop.consumer.calls == [("seek", ("t", 0, 5))]
    assert loop.offsets == {} and loop.retriable_failures == 0 and loop.committed == {("t", 0): 5}
