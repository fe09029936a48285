"""What many loaded pipeline versions cost one engine process.

    python -m benchmarks.pipelines                     # 100 versions: half 2-step chains, half joins
    python -m benchmarks.pipelines --counts 100,300    # several sizes, one after the other

Starts the embedded broker (or uses DATAFLOW_TEST_KAFKA=host:port), a fake scheduler (Chainer
stream) and one real ``dataflow engine`` process, then for each count: sends that many Create
messages (alternately a chain ``m1 -> m2`` with a tensor rename and a 2-way join ``a, b -> j``,
each in its own topics), waits for every Create ack, and prints the time to all acked, the
engine's RSS, threads and CPU while idle for ``--idle-s``; then deletes them all, waits for the
Delete acks and prints the same figures again. The baseline row is the engine with nothing loaded.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

from chainer_api import chainer_pb2

Msg = chainer_pb2.PipelineUpdateMessage


def proc_figures(pid: int) -> tuple[float, int, float]:
    """(RSS MB, threads, CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return int(status["VmRSS"].split()[0]) / 1024, int(status["Threads"]), cpu


def idle_cpu(pid: int, seconds: float) -> float:
    """Cores used by ``pid`` over ``seconds`` of no traffic."""
    before = proc_figures(pid)[2]
    time.sleep(seconds)
    return (proc_figures(pid)[2] - before) / seconds


def messages(count: int, stem: str):
    from dataflow.kafka import TopicNamer
    from dataflow.topology.builders import pipeline_message

    namer = TopicNamer(prefix=stem, namespace="default")
    out = []
    for i in range(count):
        name = f"p{i}"
        if i % 2:
            spec = {"name": name, "steps": [{"name": f"{name}a"}, {"name": f"{name}b"},
                                            {"name": f"{name}j", "inputs": [f"{name}a", f"{name}b"]}]}
        else:
            spec = {"name": name, "steps": [{"name": f"{name}m1"}, {"name": f"{name}m2", "inputs": [f"{name}m1"],
                                            "tensorMap": {f"{name}m1.outputs.OUTPUT0": "INPUT0"}}]}
        msg = pipeline_message(spec, uid=f"{stem}-{i:04d}", namer=namer, timestamp=1)
        out.append(msg)
    return out


def wait_acks(fake, uids: set[str], op: int, timeout_s: float) -> tuple[float, int]:
    """Seconds until every uid has an ack for ``op``; and how many failed."""
    start = time.monotonic()
    while True:
        acked = {a.update.uid: a.success for a in list(fake.acks) if a.update.op == op and a.update.uid in uids}
        if len(acked) == len(uids):
            return time.monotonic() - start, sum(1 for ok in acked.values() if not ok)
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"only {len(acked)} of {len(uids)} acks for op {op} within {timeout_s:g}s")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="100", help="comma list of pipeline counts (default 100)")
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle CPU measuring window")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-phase ack timeout (s)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]

    from dataflow.engine.fake_scheduler import FakeChainer
    from dataflow.testing_kafka import start_test_kafka

    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        env = start_test_kafka()
        if env.broker is not None:
            stack.callback(env.broker.stop)
        fake = FakeChainer().start()
        stack.callback(fake.stop)
        log = open(os.path.join(tmp, "engine.log"), "ab")
        stack.callback(log.close)
        engine = subprocess.Popen(
            [sys.executable, "-m", "dataflow.cli", "--log-level", "WARNING", "engine", "--scheduler", fake.target,
             "--kafka", env.bootstrap, "--name", "bench-engine", "--state-dir", os.path.join(tmp, "state")],
            stdout=log, stderr=log)

        def stop_engine() -> None:
            engine.terminate()
            try:
                engine.wait(60)
            except subprocess.TimeoutExpired:
                engine.kill()
        stack.callback(stop_engine)
        fake.wait_subscribed("bench-engine", 60)
        time.sleep(1.0)
        rss, threads, _ = proc_figures(engine.pid)
        rows.append(("baseline", 0, "", rss, threads, idle_cpu(engine.pid, args.idle_s), ""))
        for count in counts:
            msgs = messages(count, env.unique("pl"))
            uids = {m.uid for m in msgs}
            for m in msgs:
                fake.send(m)
            took, failed = wait_acks(fake, uids, Msg.Create, args.timeout)
            rss, threads, _ = proc_figures(engine.pid)
            rows.append((f"{count} loaded", count, f"{took:.1f}", rss, threads, idle_cpu(engine.pid, args.idle_s),
                         f"{failed} failed" if failed else ""))
            for m in msgs:
                fake.send(Msg(op=Msg.Delete, pipeline=m.pipeline, version=m.version, uid=m.uid, timestamp=2))
            took, failed = wait_acks(fake, uids, Msg.Delete, args.timeout)
            time.sleep(1.0)
            rss, threads, _ = proc_figures(engine.pid)
            rows.append((f"{count} unloaded", 0, f"{took:.1f}", rss, threads, idle_cpu(engine.pid, args.idle_s),
                         f"{failed} failed" if failed else ""))

    print(f"\none engine process, embedded broker; pipelines alternate a 2-step chain and a 2-way join; "
          f"idle CPU over {args.idle_s:g} s\n")
    print("| state | pipelines | seconds to all acked | engine RSS MB | engine threads | engine idle cores | note |")
    print("|---|---|---|---|---|---|---|")
    for name, n, took, rss, threads, cpu, note in rows:
        print(f"| {name} | {n} | {took} | {rss:.0f} | {threads} | {cpu:.2f} | {note} |")


if __name__ == "__main__":
    main()
