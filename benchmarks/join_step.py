"""The join step without Kafka: ``PartitionTask.process`` over a partition's state, with checkpoints.

    python -m benchmarks.join_step                       # 100k pairs, RocksDB state
    python -m benchmarks.join_step --n 50000 --state memory

The same 2-way inner join as ``benchmarks.run``'s join scenario (``j`` with inputs ``a`` and ``b``,
1 KB raw FP32 responses, the same keys on both branches, 60 s window), fed the way a consumer
delivers two topics: ``--interleave`` records of one branch, then the same keys of the other.
Every ``--checkpoint-every`` records the task writes its state as a runner's checkpoint does
(changelog entries read, write buffer applied to the database), without producing anything.
Printed: joined outputs per CPU second of the whole process (RocksDB's threads included), the
CPU per output spent processing and checkpointing, the changelog records and bytes a checkpoint
would send per output, and the CPU of each thread.
"""
from __future__ import annotations

import argparse
import collections
import glob
import shutil
import tempfile
import time

import numpy as np

HEADERS = [("pipeline", b"bench")]


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's live threads, by thread name."""
    out: collections.Counter[str] = collections.Counter()
    for task in glob.glob("/proc/self/task/*"):
        try:
            with open(f"{task}/comm") as f:
                name = f.read().strip()
            with open(f"{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] += (int(fields[11]) + int(fields[12])) / 100.0
    return dict(out)


def main(argv: list[str] | None = None) -> None:
    from dataflow import oip
    from dataflow.kafka import TopicNamer
    from dataflow.records import Record
    from dataflow.runtime import gc_tuning
    from dataflow.runtime.tasks import PartitionTask
    from dataflow.state.partition import memory_partition_state, rocks_partition_state
    from dataflow.topology import compile_pipeline
    from scheduler_min.convert import pipeline_message

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="keys, each arriving on both branches")
    parser.add_argument("--state", choices=["rocks", "memory"], default="rocks")
    parser.add_argument("--interleave", type=int, default=500, help="records of one branch in a row")
    parser.add_argument("--checkpoint-every", type=int, default=5_000, help="records between checkpoints")
    args = parser.parse_args(argv)

    gc_tuning.tune()   # as the runtimes do
    namer = TopicNamer(prefix="bench", namespace="default")
    msg = pipeline_message({"name": "bench", "steps": [{"name": "a"}, {"name": "b"},
                                                       {"name": "j", "inputs": ["a", "b"]}]},
                           uid="join-step", namer=namer)
    topics = (namer.model_outputs("a"), namer.model_outputs("b"))
    value = oip.make_response({"OUTPUT0": np.zeros((1, 250), dtype=np.float32)}, raw=True,
                              id="r").SerializeToString()
    state_dir = tempfile.mkdtemp(prefix="join-step-")
    state = rocks_partition_state(state_dir, 0) if args.state == "rocks" else memory_partition_state(0)
    task = PartitionTask(0, state, lambda stores: compile_pipeline(msg, store_factory=stores))
    records = []
    for start in range(0, args.n, args.interleave):
        for topic in topics:
            for i in range(start, min(args.n, start + args.interleave)):
                records.append(Record(topic, f"0.bench.r{i}", value, list(HEADERS), 1_700_000_000_000 + i, 0))

    now_ms = int(time.time() * 1000)
    outputs = changelog_records = changelog_bytes = since = 0
    checkpoint_s = 0.0
    started = time.process_time()

    def checkpoint() -> None:
        nonlocal changelog_records, changelog_bytes, checkpoint_s
        t = time.process_time()
        entries = task.changelog_entries()
        changelog_records += len(entries)
        changelog_bytes += sum(len(v or b"") for _, _, v in entries)
        task.commit(changelog_records)
        checkpoint_s += time.process_time() - t

    try:
        for record in records:
            outputs += len(task.process(record, now_ms))
            since += 1
            if since >= args.checkpoint_every:
                since = 0
                checkpoint()
        checkpoint()
        total_s = time.process_time() - started
        threads = thread_cpu()
    finally:
        task.close()
        shutil.rmtree(state_dir, ignore_errors=True)
    print(f"{args.state} state, {outputs} joined outputs: {outputs / total_s:,.0f} per CPU second; "
          f"per output {(total_s - checkpoint_s) / outputs * 1e6:.1f} us processing, "
          f"{checkpoint_s / outputs * 1e6:.1f} us checkpointing; changelog "
          f"{changelog_records / outputs:.2f} records, {changelog_bytes / outputs:,.0f} bytes per output")
    print("thread CPU s:", ", ".join(f"{k} {v:.2f}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
