"""The Kafka runner's per-record loop without a broker: us per record of ``RunnerLoop._process``.

    python -m benchmarks.runner_loop                     # 5 x 200 batches of 1,000 chain records
    python -m benchmarks.runner_loop --no-step-timing    # without the per-record step timing

The same chain step as ``benchmarks.run`` (``m2`` renames ``m1.outputs.OUTPUT0 -> INPUT0``) over
confluent-kafka ``Message`` objects made in memory, a batch at a time as ``consume`` hands them
over, and a producer whose ``produce`` does nothing: what is measured is the Python side of the
loop (librdkafka's produce call and the consume are the same for any runner, and for the raw
passthrough). Only ``_process`` is timed (making the messages is not), on the process's CPU clock,
so other work on the machine changes the figures little.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

import numpy as np
from confluent_kafka import Message

HEADERS = [("pipeline", b"bench")]


class NullProducer:
    def produce(self, *args: Any, **kwargs: Any) -> None:
        pass

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def make_driver(step_latency: bool):
    from dataflow import oip
    from dataflow.kafka import CLUSTER_PROFILE, KafkaSettings, TopicNamer
    from dataflow.runtime.base import RuntimeConfig
    from dataflow.runtime.kafka_runtime import KafkaRunner, RunnerLoop
    from dataflow.runtime.tasks import PartitionTasks
    from scheduler_min.convert import pipeline_message

    namer = TopicNamer(prefix="bench", namespace="default")
    msg = pipeline_message({"name": "bench", "steps": [
        {"name": "m1"}, {"name": "m2", "inputs": ["m1"], "tensorMap": {"m1.outputs.OUTPUT0": "INPUT0"}}]},
        uid="loop", namer=namer)
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", profile=CLUSTER_PROFILE)
    config = RuntimeConfig(kafka=settings, step_latency=step_latency)
    runner = KafkaRunner(msg, config)
    tasks = PartitionTasks(runner._build, None)
    tasks.assign({0})
    source, sink = namer.model_outputs("m1"), namer.model_inputs("m2")
    driver = RunnerLoop(runner, tasks, {source: 1, sink: 1}, frozenset([source]))
    driver.producer = NullProducer()  # type: ignore[assignment]
    value = oip.make_response({"OUTPUT0": np.zeros((1, 250), dtype=np.float32)}, raw=True,
                              id="r").SerializeToString()
    return driver, source, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--no-step-timing", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    from dataflow.runtime import gc_tuning
    gc_tuning.tune()   # as the engine's poll loops do
    driver, source, value = make_driver(not args.no_step_timing)
    per_record = []
    offset = 0
    for _ in range(args.repeat):
        spent = 0.0
        collections_before = sum(s["collections"] for s in gc.get_stats())
        for _ in range(args.batches):
            msgs = [Message(topic=source, partition=0, offset=offset + i, key=f"0.bench.r{offset + i}".encode(),
                            value=value, headers=list(HEADERS), timestamp=(1, 1_700_000_000_000))
                    for i in range(args.batch)]
            offset += args.batch
            t0 = time.process_time()
            driver._process(msgs)
            spent += time.process_time() - t0
            del msgs
        n = args.batches * args.batch
        collections = sum(s["collections"] for s in gc.get_stats()) - collections_before
        per_record.append(spent / n * 1e6)
        print(f"{per_record[-1]:.2f} us per record ({n} records, {collections} gc collections)")
    print(f"median {statistics.median(per_record):.2f}, best {min(per_record):.2f} us per record")


if __name__ == "__main__":
    main()
