"""The Kafka runner's per-record loop without a broker: us per record of ``RunnerLoop._process``.

    python -m benchmarks.runner_loop                     # 5 x 200 batches of 1,000 chain records
    python -m benchmarks.runner_loop --no-step-timing    # without the per-record step timing
    python -m benchmarks.runner_loop --shape join        # a 2-way inner join over in-memory state

The same chain step as ``benchmarks.run`` (``m2`` renames ``m1.outputs.OUTPUT0 -> INPUT0``) over
confluent-kafka ``Message`` objects made in memory, a batch at a time as ``consume`` hands them
over, and a producer whose ``produce`` does nothing: what is measured is the Python side of the
loop (librdkafka's produce call and the consume are the same for any runner, and for the raw
passthrough). Only ``_process`` is timed (making the messages is not), on the process's CPU clock,
so other work on the machine changes the figures little.

``--shape join``: the join of ``benchmarks.run`` (``j`` with inputs ``a`` and ``b``) over an
in-memory partition state, each batch half records of ``a`` and then the same keys on ``b``, so
every second record joins. Figures are per consumed record (two per joined output); no checkpoint
is taken, so the join's state work at a checkpoint is not in them (``benchmarks.join_step``).
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


def make_driver(step_latency: bool, shape: str = "chain"):
    from dataflow import oip
    from dataflow.kafka import CLUSTER_PROFILE, KafkaSettings, TopicNamer
    from dataflow.runtime.base import RuntimeConfig
    from dataflow.runtime.kafka_runtime import KafkaRunner, RunnerLoop
    from dataflow.runtime.tasks import PartitionTasks
    from dataflow.state.partition import memory_partition_state
    from scheduler_min.convert import pipeline_message

    namer = TopicNamer(prefix="bench", namespace="default")
    if shape == "join":
        steps = [{"name": "a"}, {"name": "b"}, {"name": "j", "inputs": ["a", "b"]}]
        sources, sink = [namer.model_outputs("a"), namer.model_outputs("b")], namer.model_inputs("j")
    else:
        steps = [{"name": "m1"}, {"name": "m2", "inputs": ["m1"], "tensorMap": {"m1.outputs.OUTPUT0": "INPUT0"}}]
        sources, sink = [namer.model_outputs("m1")], namer.model_inputs("m2")
    msg = pipeline_message({"name": "bench", "steps": steps}, uid="loop", namer=namer)
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", profile=CLUSTER_PROFILE)
    config = RuntimeConfig(kafka=settings, step_latency=step_latency)
    runner = KafkaRunner(msg, config)
    tasks = PartitionTasks(runner._build, memory_partition_state if shape == "join" else None)
    tasks.assign({0})
    driver = RunnerLoop(runner, tasks, {**{s: 1 for s in sources}, sink: 1}, frozenset(sources))
    driver.producer = NullProducer()  # type: ignore[assignment]
    value = oip.make_response({"OUTPUT0": np.zeros((1, 250), dtype=np.float32)}, raw=True,
                              id="r").SerializeToString()
    return driver, sources, value


def batch_of(sources: list[str], value: bytes, offset: int, size: int) -> list[Message]:
    """``size`` records from ``offset`` on, split evenly between the sources with the same keys
    (all of the one source for a chain; half of each branch for the join)."""
    each = size // len(sources)
    return [Message(topic=source, partition=0, offset=offset + i, key=f"0.bench.r{offset + i}".encode(),
                    value=value, headers=list(HEADERS), timestamp=(1, 1_700_000_000_000))
            for source in sources for i in range(each)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--no-step-timing", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shape", choices=["chain", "join"], default="chain")
    args = parser.parse_args(argv)
    from dataflow.runtime import gc_tuning
    gc_tuning.tune()   # as the engine's poll loops do
    driver, sources, value = make_driver(not args.no_step_timing, args.shape)
    per_record = []
    offset = 0
    for _ in range(args.repeat):
        spent = 0.0
        collections_before = sum(s["collections"] for s in gc.get_stats())
        for _ in range(args.batches):
            msgs = batch_of(sources, value, offset, args.batch)
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
