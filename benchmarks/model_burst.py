"""A burst of records to a model whose server is down: how long until every one has its error record.

    python -m benchmarks.model_burst            # 1000 records
    python -m benchmarks.model_burst --n 100

One model gateway (in this process) over the embedded broker serves model ``dead`` at a port
nothing listens on; ``--n`` records are produced to its input topic at once, and the error records
are read back from the errors topic. A caller waiting behind the pipeline gateway gives up after
30 s by default, so what matters is that the last error record comes well before that.
"""
from __future__ import annotations

import argparse
import asyncio
import threading
import time

from tritonclient.grpc import service_pb2 as pb

from dataflow.broker import free_port
from dataflow.kafka import TopicNamer
from dataflow_testing.kafka_env import start_test_kafka
from gateways.model_service import ModelGatewayConfig, ModelGatewayService


def burst(n: int) -> str:
    env = start_test_kafka()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    namer = TopicNamer(prefix="burst")
    env.create_topics(namer.errors())
    svc = ModelGatewayService(ModelGatewayConfig(settings=env.settings, namer=namer, consumer_prefix="burst",
                                                 static_models={"dead": f"grpc://127.0.0.1:{free_port()}"}))
    run(svc.start())
    consumer = env.consumer(offset_reset="earliest")
    try:
        if not svc.gateway.wait_assigned("dead"):
            raise SystemExit("the model gateway got no partition of the input topic")
        consumer.subscribe([namer.errors()])
        while not consumer.assignment():
            consumer.poll(0.2)
        req = pb.ModelInferRequest()
        req.inputs.add(name="INPUT", datatype="INT32", shape=[1]).contents.int_contents.append(1)
        value = req.SerializeToString()
        producer = env.producer()
        start = time.monotonic()
        for i in range(n):
            producer.produce(namer.model_inputs("dead"), value, key=f"0.p.b{i}")
        producer.flush(10)
        got = fast = 0
        first = None
        while got < n and time.monotonic() - start < 600:
            for m in consumer.consume(500, 0.2):
                if m.error():
                    continue
                got += 1
                first = first or time.monotonic() - start
                fast += b"failing fast" in m.value()
        took = time.monotonic() - start
        return (f"{n} records to an unreachable model server: {got} error records, the last after {took:.2f} s "
                f"(the first after {first or 0:.2f} s); {fast} failed fast without a connection attempt")
    finally:
        consumer.close()
        run(svc.stop())
        if env.broker is not None:
            env.broker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="records in the burst (default 1000)")
    print(burst(parser.parse_args(argv).n))


if __name__ == "__main__":
    main()
