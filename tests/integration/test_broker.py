"""The embedded broker carries keys, headers and values through confluent-kafka and aiokafka."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from dataflow.broker import EmbeddedBroker


def _consume(consumer, n, timeout_s=20.0):
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        out.append(msg)
    return out


def test_confluent_roundtrip_keeps_key_and_headers(kafka):
    topic = kafka.new_topic("rt", partitions=2)
    producer = kafka.producer()
    for i in range(10):
        producer.produce(topic, key=f"{i % 2}.p.req{i}", value=f"v{i}".encode(), partition=i % 2,
                         headers=[("pipeline", b"p"), ("x-request-id", f"req{i}".encode())])
    producer.flush(10)
    consumer = kafka.consumer()
    consumer.subscribe([topic])
    msgs = _consume(consumer, 10)
    consumer.close()
    assert len(msgs) == 10
    for m in msgs:
        i = int(m.value()[1:])
        assert m.key() == f"{i % 2}.p.req{i}".encode()
        assert m.partition() == i % 2
        assert m.headers() == [("pipeline", b"p"), ("x-request-id", f"req{i}".encode())]


def test_aiokafka_roundtrip_keeps_key_and_headers(kafka):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = kafka.new_topic("aio")

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello", key=b"0.p.abc",
                                         headers=[("pipeline", b"p"), ("x-request-id", b"abc")])
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, group_id=kafka.group_id(),
                                    auto_offset_reset="earliest", session_timeout_ms=6000,
                                    heartbeat_interval_ms=1000, fetch_max_wait_ms=10)
        await consumer.start()
        try:
            return await asyncio.wait_for(consumer.getone(), 20)
        finally:
            await consumer.stop()

    msg = asyncio.run(run())
    assert msg.key == b"0.p.abc" and msg.value == b"hello"
    assert list(msg.headers) == [("pipeline", b"p"), ("x-request-id", b"abc")]


def test_embedded_broker_context_manager_stops():
    with EmbeddedBroker() as broker:
        assert broker.alive()
    assert not broker.alive()


def test_cli_broker_prints_bootstrap_and_stops_on_sigint():
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "dataflow_cli", "broker"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("broker ready: bootstrap 127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
