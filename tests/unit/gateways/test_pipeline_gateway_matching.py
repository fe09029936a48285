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
