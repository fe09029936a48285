"""Which output record answers a waiting request (no broker: the loop-side matching only)."""
from __future__ import annotations

import asyncio

from dataflow.kafka import KafkaSettings
from gateways.pipeline_gateway import PipelineGateway
from gateways.routing import Resource


def test_only_the_awaited_output_topic_answers():
    """A pipeline's first step writes the request's key to its model's output topic too; when the
    gateway also reads that topic (the model was called directly), it must not answer with it."""

    async def run():
        gw = PipelineGateway(KafkaSettings(bootstrap_servers="127.0.0.1:1"))
        key = "0.tfsimples.req-1"
        fut = asyncio.get_running_loop().create_future()
        gw._pending[key] = fut
        gw._pending_where[key] = (Resource("tfsimples", False), "g", "seldon.default.pipeline.tfsimples.outputs", 0)
        gw._complete([(key, "seldon.default.model.tfsimple1.outputs", b"first step", [])])
        assert not fut.done()
        gw._complete([(key, "seldon.default.pipeline.tfsimples.outputs", b"pipeline", [])])
        assert fut.done() and fut.result().value == b"pipeline"

    asyncio.run(run())


class _Consumer:
    def partitions(self, _topic):
        return [0]

    def expect(self, _topic):
        pass

    def stop_expecting(self, _topic):
        pass


class _FailingProducer:
    """Queues nothing: reports each record's delivery failure from another thread, as librdkafka's
    poll thread would."""

    def __init__(self, code):
        self.code = code

    async def send(self, topic, value, *, key, partition, headers, on_error):
        import threading

        from gateways.kafka_io import ProduceError
        threading.Thread(target=on_error, args=(ProduceError(f"produce to {topic} failed", self.code),)).start()


def _gateway_with(producer):
    gw = PipelineGateway(KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    gw._loop = asyncio.get_running_loop()
    gw._producer = producer
    resource = Resource("p", False)
    gw._loaded[resource] = 1
    gw._consumers[gw.group_id("p")] = _Consumer()
    return gw, resource


def test_a_request_whose_record_is_not_delivered_fails_at_once():
    """The gateway does not wait for delivery reports of requests; a failed delivery still ends
    the wait with the gateway's error (not the request timeout), and nothing stays pending."""
    import pytest
    from confluent_kafka import KafkaError

    from gateways.pipeline_gateway import GatewayError, RequestTooLarge

    async def run(code):
        gw, resource = _gateway_with(_FailingProducer(code))
        started = asyncio.get_running_loop().time()
        with pytest.raises(GatewayError) as info:
            await gw.infer(resource, b"\x0a\x01p", [], "rid", timeout_s=20)
        assert asyncio.get_running_loop().time() - started < 5
        assert not gw._pending and not gw._pending_where
        return info.value

    assert type(asyncio.run(run(KafkaError._MSG_TIMED_OUT))) is GatewayError
    assert isinstance(asyncio.run(run(KafkaError.MSG_SIZE_TOO_LARGE)), RequestTooLarge)
