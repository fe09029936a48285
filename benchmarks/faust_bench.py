"""Throughput of the Faust runtime on one chain step (python -m benchmarks.faust_bench).

A compiled pipeline whose step ``m2`` reads ``model.m1.outputs`` (1 KB ``ModelInferResponse``),
renames ``OUTPUT0`` to ``INPUT0`` and writes ``model.m2.inputs``. The runner is started first
(consumption starts at ``latest``), then N records are produced as fast as confluent-kafka can,
and the sink is consumed until all N arrived. Reported: wall msg/s from first produce to last
output, and msg/s per core of the worker process (its user+sys CPU time over the run).

    python -m benchmarks.faust_bench --n 50000                 # compiled chain step
    python -m benchmarks.faust_bench --factory passthrough     # Faust overhead only
    python -m benchmarks.faust_bench --path agent              # Faust's stock agent/stream path
    python -m benchmarks.faust_bench --profile /tmp/faust.prof # cProfile the worker's main thread
    python -m benchmarks.faust_bench --latency 300 --rate 100  # per-hop latency at a low rate
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import time

import numpy as np

PASSTHROUGH = "dataflow_testing.faust_factories:passthrough"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args) -> dict:
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from dataflow import oip
    from dataflow.kafka import TopicNamer
    from dataflow.runtime.base import RuntimeConfig
    from dataflow.runtime.faust_runtime import FaustRunner
    from dataflow.runtime.faust_worker import DEFAULT_FACTORY
    from dataflow_testing.kafka_env import start_test_kafka
    from scheduler_min.convert import pipeline_message

    env = start_test_kafka()
    try:
        namer = TopicNamer(prefix=env.unique("bench"), namespace="default")
        msg = pipeline_message({"name": "bench", "steps": [
            {"name": "m1"}, {"name": "m2", "inputs": ["m1"], "tensorMap": {"m1.outputs.OUTPUT0": "INPUT0"}}]},
            uid=env.unique("uid"), namer=namer)
        if args.profile:
            os.environ["DATAFLOW_FAUST_PROFILE"] = args.profile
        factory = PASSTHROUGH if args.factory == "passthrough" else DEFAULT_FACTORY
        settings = dataclasses.replace(env.settings, fetch_wait_max_ms_override=args.fetch_wait_ms)
        config = RuntimeConfig(kafka=settings, partitions=args.partitions, state_dir="/tmp/faust-bench-state",
                               commit_interval_ms=args.commit_interval_ms, exactly_once=args.exactly_once)
        runner = FaustRunner(msg, config, pipeline_factory=factory, processing_path=args.path)
        await runner.start()
        source, sink = namer.model_outputs("m1"), namer.model_inputs("m2")
        value = oip.make_response({"OUTPUT0": np.zeros((1, 250), dtype=np.float32)}, raw=True,
                                    id="r").SerializeToString()
        consumer = env.consumer()
        consumer.assign([TopicPartition(sink, p, OFFSET_BEGINNING) for p in range(args.partitions)])
        producer = env.producer()
        if args.latency:
            return await measure_latency(args, runner, producer, consumer, source, value)
        cpu0, t0 = cpu_seconds(runner.pid), time.perf_counter()
        for i in range(args.n):
            producer.produce(source, key=f"{i % args.partitions}.bench.r{i}", value=value,
                             partition=i % args.partitions, headers=[("pipeline", b"bench")])
            if i % 10000 == 0:
                producer.poll(0)
        producer.flush(60)
        produced_s = time.perf_counter() - t0
        got, deadline = 0, time.monotonic() + args.timeout
        while got < args.n and time.monotonic() < deadline:
            batch = consumer.consume(10000, 0.2)
            got += sum(1 for m in batch if not m.error())
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(runner.pid) - cpu0
        consumer.close()
        await runner.stop()
        return {"factory": args.factory, "path": args.path, "eos": args.exactly_once, "n": args.n, "received": got,
                "produce_s": round(produced_s, 2),
                "wall_s": round(wall, 2), "msg_per_s": round(got / wall), "worker_cpu_s": round(cpu, 2),
                "msg_per_core_s": round(got / cpu) if cpu else None}
    finally:
        if env.broker is not None:
            env.broker.stop()


async def measure_latency(args, runner, producer, consumer, source, value) -> dict:
    """One record every 1/rate s; latency = sink consume time - source record timestamp."""
    latencies = []
    interval = 1.0 / args.rate
    warm_until = time.monotonic() + 1.0  # let the sink consumer finish its first fetch set-up
    while time.monotonic() < warm_until:
        consumer.poll(0.1)
    try:
        for i in range(args.latency):
            producer.produce(source, key=f"0.bench.l{i}", value=value, partition=0, headers=[("pipeline", b"bench")],
                             timestamp=int(time.time() * 1000))
            producer.poll(0)
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline:
                msg = consumer.poll(max(0.0, deadline - time.monotonic()))
                if msg is not None and not msg.error():
                    latencies.append(time.time() * 1000 - msg.timestamp()[1])
        end = time.monotonic() + 5
        while len(latencies) < args.latency and time.monotonic() < end:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                latencies.append(time.time() * 1000 - msg.timestamp()[1])
    finally:
        consumer.close()
        await runner.stop()
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)  # noqa: E731
    return {"path": args.path, "records": args.latency, "received": len(latencies), "rate": args.rate,
            "p10_ms": pick(0.1), "p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99),
            "max_ms": round(latencies[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--factory", choices=["compiled", "passthrough"], default="compiled")
    parser.add_argument("--path", choices=["batch", "agent"], default="batch")
    parser.add_argument("--profile", default="")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--latency", type=int, default=0, help="measure per-hop latency over this many records")
    parser.add_argument("--rate", type=float, default=100.0, help="records/s in --latency mode")
    parser.add_argument("--commit-interval-ms", type=int, default=1000)
    parser.add_argument("--exactly-once", action="store_true", help="Faust exactly_once (transactions)")
    parser.add_argument("--fetch-wait-ms", type=int, default=10, help="consumer fetch wait of the worker")
    print(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
