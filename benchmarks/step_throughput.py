"""Step throughput and latency of the runtimes against raw confluent-kafka, in one run.

    python -m benchmarks.run                      # defaults: 30k records, 1,000 msg/s latency phase
    python -m benchmarks.run --n 100000 --runtimes kafka,faust --latency-s 5

Starts the embedded broker (or uses DATAFLOW_TEST_KAFKA) and measures, per scenario:

* raw       - a bare confluent-kafka consume(batch) -> produce loop copying bytes (the ceiling), with the
              producer linger the runners use;
* kafka/chain, faust/chain - one OUTPUT_INPUT step renaming a tensor (``m1.outputs.OUTPUT0 -> INPUT0``);
* kafka/join, faust/join   - one 2-way inner join step (``j`` with inputs ``a`` and ``b``).

Throughput: ``--n`` 1 KB ModelInferResponses are preloaded (both branches for joins) and the
group's offsets pre-committed at 0, so the runner (which otherwise starts at ``latest``) drains
the backlog as soon as it has its partition. msg/s = outputs / (last output received - runner
RUNNING); cores = the runner process's user+sys CPU over the same span (incl. librdkafka threads
and, for Faust, its worker process); msg/s per core = outputs / CPU seconds. Latency: then
records are produced at ``--rate`` for ``--latency-s`` and each output's latency is its arrival
time minus its source record's timestamp (kept by every runtime). Each runner runs in its own
child process so CPU accounting is clean.

Rounds: with ``--rounds R`` every scenario runs R times, the plan in order and then reversed every
other round, and each row adds up its rounds (outputs, seconds, CPU seconds, latencies). On a
shared machine whose speed drifts over minutes, a scenario that always ran first (the raw
passthrough) would otherwise be measured in a different minute from the one compared with it.
``vs raw`` compares msg/s (wall clock); ``per core vs raw`` compares msg/s per core, the figure
that does not depend on how much of the machine the runner got.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

HEADERS = [("pipeline", b"bench")]


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------------------ child side

def child_main(args) -> None:
    """Run one runner until told to stop; report CPU on ``MARK``."""
    import asyncio
    import logging

    logging.basicConfig(level=logging.WARNING)
    spec = json.loads(args.spec)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        runner, extra_pid, stop_raw = await start_runner(spec)
        t0 = self_cpu() + (cpu_of(extra_pid) if extra_pid else 0.0)
        print("READY", flush=True)
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "MARK":
                cpu = self_cpu() + (cpu_of(extra_pid) if extra_pid else 0.0)
                print(json.dumps({"cpu_s": cpu - t0}), flush=True)
            elif line in ("STOP", ""):
                break
        if runner is not None:
            await runner.stop()
        if stop_raw is not None:
            stop_raw()
        print("STOPPED", flush=True)

    asyncio.run(main())


async def start_runner(spec: dict):
    from chainer_api import chainer_pb2
    from dataflow.kafka import KafkaSettings
    from dataflow.runtime.base import RuntimeConfig

    settings = KafkaSettings(bootstrap_servers=spec["bootstrap"])
    if spec["kind"] == "raw":
        return None, None, start_raw_loop(settings, spec)
    if spec["kind"] == "rawjoin":
        return None, None, start_raw_join(settings, spec)
    msg = chainer_pb2.PipelineUpdateMessage.FromString(base64.b64decode(spec["msg"]))
    config = RuntimeConfig(kafka=settings, state_dir=spec["state_dir"], commit_interval_ms=1000,
                           start_timeout_s=120, step_latency=spec.get("step_latency", True))
    if spec["kind"] == "kafka":
        from dataflow.runtime.kafka_runtime import KafkaRunner

        runner = KafkaRunner(msg, config)
        await runner.start()
        return runner, None, None
    from dataflow.runtime.faust_runtime import FaustRunner

    runner = FaustRunner(msg, config)
    await runner.start()
    return runner, runner.pid, None


def run_bare_loop(loop, assigned, stop):
    """Run a bare loop on its own thread until its consumer has its partitions; returns what
    stops it."""
    import threading

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    assigned.wait(120)

    def halt() -> None:
        stop.set()
        thread.join(30)
    return halt


def start_raw_loop(settings, spec: dict):
    """Bytes in, bytes out: the cheapest possible consume -> produce loop with confluent-kafka."""
    import threading

    from confluent_kafka import Consumer, Producer

    from dataflow.kafka import poll_batch
    from dataflow.kafka_produce import produce
    from dataflow.runtime.producers import LINGER_MS

    consumer = Consumer(settings.consumer(spec["group"]))
    producer = Producer(settings.producer(**{"linger.ms": LINGER_MS}))   # the runners' producer linger
    assigned, stop = threading.Event(), threading.Event()
    consumer.subscribe([spec["source"]], on_assign=lambda c, ps: assigned.set())
    sink = spec["sink"]

    def loop() -> None:
        while not stop.is_set():
            # the runner's poll: block for the first record only, then take what is already fetched
            for m in poll_batch(consumer, 1000, 0.05):
                if m.error() is None:
                    try:   # positional, as the runner calls it (keyword arguments cost ~0.25 us a call)
                        producer.produce(sink, m.value(), m.key(), m.partition(), None, None, m.timestamp()[1],
                                         m.headers())
                    except BufferError:   # the local queue is full (a large --n): wait, as the runner does
                        produce(producer, sink, m.value(), m.key(), m.partition(), None, None, m.timestamp()[1],
                                m.headers())
            producer.poll(0)
        producer.flush(10)
        consumer.close()

    return run_bare_loop(loop, assigned, stop)


def start_raw_join(settings, spec: dict):
    """The least a durable 2-way join does, with confluent-kafka and RocksDB and nothing else: both
    branches consumed in record-time order (a branch that runs ahead waits for the other, as the
    runners align them), a key's first value kept in a dict, its second producing the two values
    concatenated; every 5,000 records or second a checkpoint as the runner's (the changed groups,
    both values concatenated, to a changelog topic, the producer flushed, the offsets committed,
    the groups written to RocksDB in one batch, with the engine's database settings). No
    protobuf, no headers rewritten, no expiry: the floor under the engine's join."""
    import collections
    import threading

    from confluent_kafka import Consumer, Producer, TopicPartition

    from dataflow.kafka import poll_batch
    from dataflow.kafka_produce import produce
    from dataflow.runtime.producers import LINGER_MS
    from dataflow.state.partition import RocksBackend

    consumer = Consumer(settings.consumer(spec["group"]))
    producer = Producer(settings.producer(**{"linger.ms": LINGER_MS}))
    db = RocksBackend(spec["state_dir"])   # the engine's database settings
    assigned, stop = threading.Event(), threading.Event()
    sources = spec["sources"]
    consumer.subscribe(sources, on_assign=lambda c, ps: assigned.set())
    sink, changelog = spec["sink"], spec["changelog"]
    branch_of = {t: i for i, t in enumerate(sources)}

    def loop() -> None:
        groups: dict[bytes, list] = {}
        changed: dict[bytes, list] = {}
        offsets: dict[tuple[str, int], int] = {}
        since, next_commit = 0, time.monotonic() + 1.0
        held: list[collections.deque] = [collections.deque(), collections.deque()]
        newest = [-1, -1]
        while not stop.is_set():
            msgs = poll_batch(consumer, 1000, 0.05)
            for m in msgs:
                if m.error() is not None:
                    continue
                b = branch_of[m.topic()]
                ts = m.timestamp()[1]
                if ts > newest[b]:
                    newest[b] = ts
                held[b].append(m)
            ready = []   # what is older than the other branch's newest, everything when idle
            for b in (0, 1):
                h, other = held[b], newest[1 - b]
                while h and (h[0].timestamp()[1] < other or len(h) > 20000 or not msgs):
                    ready.append(h.popleft())
            for m in ready:
                topic, key = m.topic(), m.key()
                offsets[(topic, m.partition())] = m.offset() + 1
                group = groups.get(key)
                if group is None:
                    group = groups[key] = [None, None]
                group[branch_of[topic]] = m.value()
                changed[key] = group
                if group[0] is not None and group[1] is not None:
                    produce(producer, sink, group[0] + group[1], key, m.partition(), None, None,
                            m.timestamp()[1], m.headers())
            since += len(msgs)
            if since >= 5000 or time.monotonic() >= next_commit:
                since, next_commit = 0, time.monotonic() + 1.0
                batch = {}
                for key, group in changed.items():
                    state = b"".join(v for v in group if v is not None)
                    produce(producer, changelog, state, key, 0)
                    batch[key] = state
                changed = {}
                producer.flush(30)
                if offsets:
                    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                    asynchronous=False)
                db.write(batch)
            else:
                producer.poll(0)
        producer.flush(10)
        consumer.close()
        db.close()

    return run_bare_loop(loop, assigned, stop)


# ------------------------------------------------------------------------------ driver side

@dataclass
class Result:
    name: str
    outputs: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    latencies_ms: list = field(default_factory=list)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.outputs / self.seconds if self.seconds else 0.0

    @property
    def cores(self) -> float:
        return self.cpu_s / self.seconds if self.seconds else 0.0

    @property
    def per_core(self) -> float:
        return self.outputs / self.cpu_s if self.cpu_s else 0.0

    def add(self, other: Result) -> None:
        """Fold another round of the same scenario into this one."""
        self.outputs += other.outputs
        self.seconds += other.seconds
        self.cpu_s += other.cpu_s
        self.latencies_ms.extend(other.latencies_ms)
        self.note = "; ".join(n for n in (self.note, other.note) if n)

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


class Scenario:
    def __init__(self, env, name: str, kind: str, shape: str, args, step_latency: bool = True):
        from dataflow.kafka import TopicNamer, dataflow_group_id
        from scheduler_min.convert import pipeline_message

        self.env, self.name, self.kind, self.shape, self.args = env, name, kind, shape, args
        self.step_latency = step_latency
        namer = TopicNamer(prefix=env.unique("bench"), namespace="default")
        uid = env.unique("uid")
        if shape == "join":
            self.msg = pipeline_message({"name": "bench", "steps": [
                {"name": "a"}, {"name": "b"}, {"name": "j", "inputs": ["a", "b"]}]}, uid=uid, namer=namer)
            self.sources, self.sink = [namer.model_outputs("a"), namer.model_outputs("b")], namer.model_inputs("j")
        else:
            self.msg = pipeline_message({"name": "bench", "steps": [
                {"name": "m1"}, {"name": "m2", "inputs": ["m1"], "tensorMap": {"m1.outputs.OUTPUT0": "INPUT0"}}]},
                uid=uid, namer=namer)
            self.sources, self.sink = [namer.model_outputs("m1")], namer.model_inputs("m2")
        self.group = dataflow_group_id(uid) if kind not in ("raw", "rawjoin") else env.unique(kind)
        self.namer = namer

    def spec(self) -> dict:
        spec = {"kind": self.kind, "bootstrap": self.env.bootstrap, "group": self.group,
                "source": self.sources[0], "sink": self.sink,
                "state_dir": os.path.join(self.args.state_dir, self.group), "step_latency": self.step_latency}
        if self.kind == "rawjoin":
            spec["sources"], spec["changelog"] = self.sources, self.sink + ".changelog"
        elif self.kind != "raw":
            spec["msg"] = base64.b64encode(self.msg.SerializeToString()).decode()
        return spec

    def run(self) -> Result:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from dataflow import oip
        from dataflow.kafka_produce import produce

        env, args = self.env, self.args
        topics = set(self.sources) | {self.sink}
        if self.kind == "rawjoin":
            topics.add(self.sink + ".changelog")
        elif self.kind != "raw":
            from dataflow.state import MemoryStore
            from dataflow.topology import compile_pipeline
            topics |= set(compile_pipeline(self.msg, store_factory=MemoryStore).all_topics)
        env.create_topics(*sorted(topics), partitions=1)
        value = oip.make_response({"OUTPUT0": np.zeros((1, 250), dtype=np.float32)}, raw=True,
                                    id="r").SerializeToString()
        producer = env.producer()
        for i in range(args.n):
            for src in self.sources:
                produce(producer, src, value=value, key=f"0.bench.r{i}", partition=0, headers=HEADERS)
            if i % 5000 == 0:
                producer.poll(0)
        producer.flush(120)
        committer = Consumer(env.settings.consumer(self.group))
        committer.commit(offsets=[TopicPartition(s, 0, 0) for s in self.sources], asynchronous=False)
        committer.close()

        sink = Consumer(env.settings.consumer(env.group_id("sink")))
        sink.assign([TopicPartition(self.sink, 0, OFFSET_BEGINNING)])
        child = subprocess.Popen([sys.executable, "-m", "benchmarks.step_throughput", "--child",
                                  "--spec", json.dumps(self.spec())], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, bufsize=1,
                                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        result = Result(self.name)
        try:
            if child.stdout.readline().strip() != "READY":
                result.note = "runner did not start"
                return result
            t0 = time.perf_counter()
            last = t0
            deadline = time.monotonic() + args.timeout
            while result.outputs < args.n and time.monotonic() < deadline:
                got = sum(1 for m in sink.consume(10000, 0.1) if m.error() is None)
                if got:
                    result.outputs += got
                    last = time.perf_counter()
            result.seconds = last - t0
            child.stdin.write("MARK\n")
            result.cpu_s = json.loads(child.stdout.readline())["cpu_s"]
            if result.outputs < args.n:
                result.note = f"timeout: {result.outputs}/{args.n}"
            if args.latency_s > 0:
                self.measure_latency(producer, sink, value, result)
        finally:
            try:
                child.stdin.write("STOP\n")
                child.stdin.flush()
                child.wait(60)
            except Exception:
                child.kill()
            sink.close()
        return result

    def measure_latency(self, producer, sink, value, result: Result) -> None:
        interval = 1.0 / self.args.rate
        total = int(self.args.rate * self.args.latency_s)
        start = time.perf_counter()
        received = 0
        for i in range(total):
            now_ms = int(time.time() * 1000)
            for src in self.sources:
                producer.produce(src, value=value, key=f"0.bench.l{i}", partition=0, headers=HEADERS,
                                 timestamp=now_ms)
            producer.poll(0)
            due = start + (i + 1) * interval
            while True:
                left = due - time.perf_counter()
                for m in sink.consume(1000, max(0.0, min(left, 0.005))):
                    if m.error() is None and m.key().startswith(b"0.bench.l"):
                        result.latencies_ms.append(time.time() * 1000 - m.timestamp()[1])
                        received += 1
                if time.perf_counter() >= due:
                    break
        producer.flush(30)
        end = time.monotonic() + 5
        while received < total and time.monotonic() < end:
            for m in sink.consume(1000, 0.1):
                if m.error() is None and m.key().startswith(b"0.bench.l"):
                    result.latencies_ms.append(time.time() * 1000 - m.timestamp()[1])
                    received += 1


def faust_available() -> bool:
    try:
        import dataflow.runtime.faust_runtime  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000, help="preloaded records per scenario (default 30000)")
    parser.add_argument("--runtimes", default="kafka,faust", help="comma list of kafka,faust (default both)")
    parser.add_argument("--shapes", default="chain,join", help="comma list of chain,join")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase records/s (default 1000)")
    parser.add_argument("--latency-s", type=float, default=3.0, help="latency phase length, 0 = skip")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-scenario drain timeout (s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="run every scenario this many times, reversing the order every other round, "
                             "and add up the rounds (default 2)")
    parser.add_argument("--state-dir", default="/tmp/dataflow-bench-state")
    parser.add_argument("--metrics-cost", action="store_true",
                        help="also run the kafka scenarios without step latency timing (the only per-record "
                             "cost of metrics), to compare in the same run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
        return

    from dataflow_testing.kafka_env import start_test_kafka

    runtimes = [r for r in args.runtimes.split(",") if r]
    if "faust" in runtimes and not faust_available():
        runtimes.remove("faust")
    env = start_test_kafka()
    results: list[Result] = []
    try:
        plan = [("raw passthrough", "raw", "chain", True)]
        if "join" in args.shapes.split(","):
            plan.append(("raw join", "rawjoin", "join", True))
        plan += [(f"{rt} {shape}", rt, shape, True) for shape in args.shapes.split(",") for rt in runtimes]
        if args.metrics_cost and "kafka" in runtimes:  # the same step without the per-record step timing
            plan += [(f"kafka {shape}, no step timing", "kafka", shape, False) for shape in args.shapes.split(",")]
        totals: dict[str, Result] = {}
        for round_no in range(max(1, args.rounds)):
            order = plan if round_no % 2 == 0 else plan[::-1]
            for name, kind, shape, timing in order:
                print(f"running {name} (round {round_no + 1}) ...", file=sys.stderr, flush=True)
                result = Scenario(env, name, kind, shape, args, step_latency=timing).run()
                if name in totals:
                    totals[name].add(result)
                else:
                    totals[name] = result
        results = [totals[name] for name, *_ in plan]
    finally:
        if env.broker is not None:
            env.broker.stop()
    print_table(results, args)


def print_table(results: list[Result], args) -> None:
    raw = results[0].rate if results and results[0].rate else 0.0
    raw_per_core = results[0].per_core if results and results[0].per_core else 0.0
    rounds = max(1, args.rounds)
    print(f"\n{args.n} x 1 KB ModelInferResponse preloaded, 1 partition; latency at {args.rate:g} msg/s "
          f"for {args.latency_s:g} s; {rounds} round{'s' if rounds > 1 else ''} added up\n")
    print("| scenario | outputs | msg/s | process cores | msg/s per core | vs raw | per core vs raw | "
          "p50 ms | p99 ms | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r.rate / raw:.2f}" if raw else "-"
        core_ratio = f"{r.per_core / raw_per_core:.2f}" if raw_per_core else "-"
        print(f"| {r.name} | {r.outputs} | {r.rate:,.0f} | {r.cores:.2f} | {r.per_core:,.0f} | {ratio} | "
              f"{core_ratio} | {r.pct(0.5):.1f} | {r.pct(0.99):.1f} | {r.note} |")


if __name__ == "__main__":
    main()
