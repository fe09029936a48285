"""End to end through the ``dataflow up`` stack, next to direct calls of the model in the same run.

    python -m benchmarks.e2e                                  # gRPC, 300 sequential, 32 concurrent for 10 s
    python -m benchmarks.e2e --protocols grpc,rest --seconds 5
    python -m benchmarks.e2e --batching off                   # model gateway without batching
    python -m benchmarks.e2e --hops                           # + where a pipeline request's time goes

Starts the stack as ``dataflow up`` does (embedded broker, MLServer with the sample models,
scheduler, one engine, model gateway, pipeline gateway, the ``tfsimples`` pipeline; free ports),
then with the unmodified tritonclient (``tritonclient.grpc.aio`` / ``tritonclient.http.aio``) calls,
one target after the other:

* ``direct tfsimple1``: MLServer itself (no Kafka): the ideal a model call costs;
* ``model tfsimple1``: the model through the pipeline gateway (``seldon-model: tfsimple1``):
  pipeline gateway -> ``model.tfsimple1.inputs`` -> model gateway -> MLServer -> outputs -> gateway,
  i.e. what the model gateway adds to one call (2 Kafka hops);
* ``pipeline tfsimples``: the 2-step pipeline (tfsimple1 -> tfsimple2, 6 Kafka hops, 2 model calls).

For each: ``--requests`` sequential requests (p50 / p99), then ``--concurrency`` requests kept in
flight for ``--seconds`` (req/s, p50 / p99). Every answer is checked. The last columns are the
same-run ratios issue 10 asks for: pipeline req/s over the direct two-call ideal (direct req/s / 2)
and the pipeline's sequential p50 minus two direct p50s. A second table gives the CPU each
process spent per request in the concurrent phase: on a machine shared with other work the
req/s move from run to run, CPU per request much less.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMPONENTS = ("broker", "engine", "model-gateway", "pipeline-gateway")

A = np.arange(1, 17, dtype=np.int32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.int32)
# tfsimple1 gives (a+b, a-b); tfsimple2 of that gives (2a, 2b).
EXPECTED = {"tfsimple1": (A + B, A - B), "tfsimples": (2 * A, 2 * B)}


@dataclass
class Target:
    label: str
    protocol: str
    url: str
    model_name: str           # what the client names in the request
    seldon_model: str | None  # routing header for the Seldon gateway
    expect: str               # key of EXPECTED


@dataclass
class Sent:
    """One request, for the hop timeline: its id and the client's wall-clock send / answer times."""
    request_id: str
    phase: str
    sent: float
    answered: float


@dataclass
class Result:
    target: Target
    seq: list[float]
    conc: list[float]
    conc_s: float
    cpu: dict[str, float] | None = None  # component -> CPU seconds over the concurrent phase
    sent: list[Sent] | None = None

    @property
    def rps(self) -> float:
        return len(self.conc) / self.conc_s


def q(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] * 1000 if len(values) > 1 else float("nan")


def _client(target: Target):
    if target.protocol == "grpc":
        import tritonclient.grpc.aio as tc
    else:
        import tritonclient.http.aio as tc
    return tc, tc.InferenceServerClient(target.url)


def _inputs(tc, rest: bool):
    """REST bodies are plain JSON (MLServer has no binary tensor extension)."""
    a, b = tc.InferInput("INPUT0", [1, 16], "INT32"), tc.InferInput("INPUT1", [1, 16], "INT32")
    kw = {"binary_data": False} if rest else {}
    a.set_data_from_numpy(A, **kw)
    b.set_data_from_numpy(B, **kw)
    return [a, b]


def _outputs(tc, rest: bool):
    if not rest:
        return None
    return [tc.InferRequestedOutput(n, binary_data=False) for n in ("OUTPUT0", "OUTPUT1")]


_ids = itertools.count()


async def _one(client, tc, target: Target, log: list[Sent] | None = None, phase: str = "") -> float:
    headers = {"seldon-model": target.seldon_model} if target.seldon_model else {}
    if target.protocol == "rest":
        # aiohttp asks for gzip by default, MLServer then compresses its answer, and the
        # tritonclient aio client (which turns aiohttp's own decompression off) fails to read it.
        headers["Accept-Encoding"] = "identity"
        headers["Content-Type"] = "application/json"  # MLServer reads a body without it as a string
    rid = f"bench{os.getpid()}x{next(_ids)}"
    headers["x-request-id"] = rid
    wall, start = time.time(), time.perf_counter()
    rest = target.protocol == "rest"
    result = await client.infer(target.model_name, _inputs(tc, rest), outputs=_outputs(tc, rest), headers=headers)
    took = time.perf_counter() - start
    if log is not None:
        log.append(Sent(rid, phase, wall, wall + took))
    want0, want1 = EXPECTED[target.expect]
    if not (np.array_equal(result.as_numpy("OUTPUT0"), want0) and np.array_equal(result.as_numpy("OUTPUT1"), want1)):
        raise SystemExit(f"{target.label}: wrong answer {result.get_response()}")
    return took


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    from benchmarks.pipelines import proc_figures

    out = {name: proc_figures(pid)[2] for name, pid in pids.items()}
    out["client"] = time.process_time()
    return out


async def measure(target: Target, requests: int, concurrency: int, seconds: float, pids: dict[str, int],
                  warmup: int = 20) -> Result:
    tc, client = _client(target)
    try:
        for _ in range(warmup):
            await _one(client, tc, target)
        sent: list[Sent] = []
        seq = [await _one(client, tc, target, sent, "sequential") for _ in range(requests)]
        conc: list[float] = []
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                conc.append(await _one(client, tc, target, sent, "concurrent"))

        cpu0, start = cpu_seconds(pids), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took, cpu1 = time.perf_counter() - start, cpu_seconds(pids)
        return Result(target, seq, conc, took, {k: cpu1[k] - cpu0[k] for k in cpu0}, sent)
    finally:
        await client.close()


def targets(stack, protocols: list[str]) -> list[Target]:
    host = stack.opt.host
    direct, model, pipeline = [], [], []
    for proto in protocols:
        at = f"{host}:{stack.mlserver_grpc_port}" if proto == "grpc" else f"{host}:{stack.mlserver_http_port}"
        gateway = stack.inference_grpc if proto == "grpc" else f"{host}:{stack.http_port}"
        direct.append(Target("direct tfsimple1", proto, at, "tfsimple1", None, "tfsimple1"))
        pipeline.append(Target("pipeline tfsimples", proto, gateway, "tfsimples", "tfsimples.pipeline", "tfsimples"))
        model.append(Target("model tfsimple1", proto, gateway, "tfsimple1", "tfsimple1", "tfsimple1"))
    # Model calls through the gateway last: once the pipeline gateway reads model.tfsimple1.outputs
    # for them, it matches records by key only and answers a pipeline request with its first
    # step's output (same key on that topic); measured that way, pipeline answers are wrong.
    return direct + pipeline + model


def table(results: list[Result], concurrency: int) -> str:
    lines = [f"| protocol | target | sequential p50 ms | sequential p99 ms | {concurrency}-concurrent req/s "
             f"| concurrent p50 ms | concurrent p99 ms | vs direct two-call ideal | seq p50 - 2 direct p50 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    direct = {r.target.protocol: r for r in results if r.target.label.startswith("direct")}
    for r in results:
        d = direct.get(r.target.protocol)
        ratio = extra = ""
        if d is not None and r.target.label.startswith("pipeline"):
            ratio = f"{r.rps / (d.rps / 2):.2f}"
            extra = f"{q(r.seq, 50) - 2 * q(d.seq, 50):+.1f}"
        lines.append(f"| {r.target.protocol} | {r.target.label} | {q(r.seq, 50):.1f} | {q(r.seq, 99):.1f} "
                     f"| {r.rps:,.0f} | {q(r.conc, 50):.1f} | {q(r.conc, 99):.1f} | {ratio} | {extra} |")
    return "\n".join(lines)


# The engine writes a step's output with the timestamp of the record it read (as Kafka Streams
# does), so its hops are not visible on their own: each row below is an engine step plus the
# component that produced next (2 Kafka hops), the last one the engine's output step plus the
# pipeline gateway's answer.
PIPELINE_HOPS = (("pipeline gw: request -> produce", None, "pipeline.tfsimples.inputs"),
                 ("engine step tfsimple1 + model gw tfsimple1", "pipeline.tfsimples.inputs", "model.tfsimple1.outputs"),
                 ("engine step tfsimple2 + model gw tfsimple2", "model.tfsimple1.outputs", "model.tfsimple2.outputs"),
                 ("engine output step + pipeline gw answer", "model.tfsimple2.outputs", None))


def produce_times(bootstrap: str, topics: list[str]) -> dict[str, dict[str, float]]:
    """topic -> record key -> producer timestamp (s) of every record on ``topics``."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-bench-{os.getpid()}",
                  "enable.auto.commit": False})
    out: dict[str, dict[str, float]] = {t: {} for t in topics}
    try:
        md = c.list_topics(timeout=10)
        tps, ends = [], {}
        for t in topics:
            for p in md.topics[t].partitions:
                tp = TopicPartition(t, p, 0)
                ends[(t, p)] = c.get_watermark_offsets(tp, timeout=10)[1]
                if ends[(t, p)] > 0:
                    tps.append(tp)
        c.assign(tps)
        left = {k for k, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                out[m.topic()].setdefault((m.key() or b"").decode(), m.timestamp()[1] / 1000)
                if m.offset() + 1 >= ends[(m.topic(), m.partition())]:
                    left.discard((m.topic(), m.partition()))
    finally:
        c.close()
    return out


def hop_table(result: Result, bootstrap: str, namer) -> str:
    """Median / p90 ms between consecutive produce timestamps of each request's records: where a
    request's time goes, hop by hop (a hop = consume + work + produce of the next record)."""
    def topic(ref):
        kind, rest = ref.split(".", 1)
        return namer.pipeline_topic(rest) if kind == "pipeline" else namer.model_topic(rest)

    refs = [h[2] for h in PIPELINE_HOPS[:-1]]  # every topic a row starts or ends at
    times = produce_times(bootstrap, [topic(r) for r in refs])
    by_id = {}
    for r in refs:
        for key, ts in times[topic(r)].items():
            by_id.setdefault(key.rsplit(".", 1)[-1], {})[r] = ts
    lines = ["| hop | " + " | ".join(f"{ph} p50 / p90 ms" for ph in ("sequential", "concurrent")) + " |",
             "|---|---|---|"]
    for label, src, dst in PIPELINE_HOPS:
        cells = []
        for phase in ("sequential", "concurrent"):
            ds = []
            for sent in result.sent:
                if sent.phase != phase or sent.request_id not in by_id:
                    continue
                ts = by_id[sent.request_id]
                a = sent.sent if src is None else ts.get(src)
                b = sent.answered if dst is None else ts.get(dst)
                if a is not None and b is not None:
                    ds.append(b - a)
            cells.append(f"{q(ds, 50):.1f} / {q(ds, 90):.1f}" if len(ds) > 1 else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_table(results: list[Result]) -> str:
    names = list(results[0].cpu)
    lines = ["| protocol | target | " + " | ".join(names) + " | total | cores |", "|---" * (len(names) + 4) + "|"]
    for r in results:
        n = len(r.conc)
        total = sum(r.cpu.values())
        lines.append(f"| {r.target.protocol} | {r.target.label} | "
                     + " | ".join(f"{r.cpu[k] * 1000 / n:.2f}" for k in names)
                     + f" | {total * 1000 / n:.2f} | {total / r.conc_s:.2f} |")
    return "\n".join(lines)


TARGET_RATIO = 0.7   # the end-to-end goal: a pipeline at this share of the direct two-call ideal


def budget(results: list[Result]) -> str:
    """What ``TARGET_RATIO`` leaves per pipeline request when the stack is short of CPU.

    With the machine's cores busy in both phases, req/s goes as cores / CPU per request, so a
    pipeline at ``TARGET_RATIO`` of the ideal (half the direct req/s) may spend at most
    2 x direct CPU per call / ``TARGET_RATIO`` per request, scaled by the cores each phase got.
    Printed beside what the components that are not this project's code (broker, MLServer, the
    client) spent, since those bound what the engine and the gateways can be given."""
    lines = []
    direct = {r.target.protocol: r for r in results if r.target.label.startswith("direct")}
    for r in results:
        d = direct.get(r.target.protocol)
        if d is None or not r.target.label.startswith("pipeline") or not r.cpu or not d.cpu:
            continue
        d_cores = sum(d.cpu.values()) / d.conc_s
        p_cores = sum(r.cpu.values()) / r.conc_s
        d_ms = sum(d.cpu.values()) * 1000 / len(d.conc)
        allowed = 2 * d_ms / TARGET_RATIO * (p_cores / d_cores)
        per = {k: v * 1000 / len(r.conc) for k, v in r.cpu.items()}
        fixed = sum(per.get(k, 0.0) for k in ("broker", "mlserver", "client"))
        ours = sum(per.values()) - fixed
        lines.append(f"{r.target.protocol}: {TARGET_RATIO:g} of the ideal allows {allowed:.2f} ms of CPU per pipeline "
                     f"request; broker + MLServer + client used {fixed:.2f} ms, leaving {allowed - fixed:.2f} ms "
                     f"for the engine and both gateways, which used {ours:.2f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", default="grpc", help="comma list of grpc, rest (default grpc)")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per target")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="concurrent phase length per target")
    parser.add_argument("--only", default="", help="comma list of target labels' first words (direct,model,pipeline)")
    parser.add_argument("--workers", type=int, default=None,
                        help="model gateway --workers (default: its own, 8)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="model gateway --max-batch (default: its own, 32)")
    parser.add_argument("--batching", choices=("auto", "always", "off"), default=None,
                        help="model gateway --batching (default: its own, auto: models declaring a batch dimension)")
    parser.add_argument("--hops", action="store_true",
                        help="also print where a gRPC pipeline request's time goes, hop by hop")
    parser.add_argument("--partitions", type=int, default=1,
                        help="partitions per topic, as `dataflow up --partitions` (default 1)")
    parser.add_argument("--keep", action="store_true", help="print pids and wait for Enter before stopping")
    args = parser.parse_args(argv)
    if args.partitions < 1:
        parser.error(f"--partitions must be >= 1, got {args.partitions}")
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]

    from dataflow_cli.demo.stack import Stack, UpOptions

    # `dataflow up` passes no such flags: the model gateway child reads them from its environment.
    if args.workers is not None:
        os.environ["MODELGATEWAY_NUM_WORKERS"] = str(args.workers)
    if args.max_batch is not None:
        os.environ["MODELGATEWAY_MAX_BATCH"] = str(args.max_batch)
    if args.batching is not None:
        os.environ["MODELGATEWAY_BATCHING"] = args.batching
    gw_config = (f"model gateway workers {os.environ.get('MODELGATEWAY_NUM_WORKERS', 'default (8)')}, "
                 f"batching {os.environ.get('MODELGATEWAY_BATCHING', 'default (auto)')}, "
                 f"max batch {os.environ.get('MODELGATEWAY_MAX_BATCH', 'default (32)')}")

    with tempfile.TemporaryDirectory() as tmp:
        options = UpOptions(kafka_port=0, scheduler_port=0, chainer_port=0, http_port=0, grpc_port=0,
                            mlserver_http_port=0, mlserver_grpc_port=0, metrics_port=0,
                            state_dir=Path(tmp), log_level="WARNING", partitions=args.partitions)
        stack = Stack(options, out=open(os.devnull, "w"))
        try:
            stack.start()
            pids = {c.name: c.pid for c in stack.children if getattr(c, "name", None) in COMPONENTS}
            pids["mlserver"] = stack.mlserver.pid
            if args.keep:
                print(pids, flush=True)
            results = []
            only = {w for w in args.only.split(",") if w}
            for t in targets(stack, protocols):
                if only and t.label.split()[0] not in only:
                    continue
                results.append(asyncio.run(measure(t, args.requests, args.concurrency, args.seconds, pids)))
                r = results[-1]
                print(f"  {t.protocol} {t.label}: seq p50 {q(r.seq, 50):.1f} ms, {r.rps:,.0f} req/s", flush=True)
            hops = ""
            if args.hops:
                from dataflow.kafka import TopicNamer

                piped = [r for r in results if r.target.label.startswith("pipeline")]
                hops = hop_table(piped[0], stack.bootstrap, TopicNamer()) if piped else ""
            if args.keep:
                input("stack running; Enter to stop")
        finally:
            stack.stop()
    partitions = f"{args.partitions} partition{'s' if args.partitions > 1 else ''}"
    print(f"\nthe dataflow up stack (embedded broker, 1 engine, {partitions}; {gw_config}); tritonclient aio; "
          f"{args.requests} sequential requests, then {args.concurrency} in flight for {args.seconds:g} s\n")
    print(table(results, args.concurrency))
    print(f"\nCPU ms per request in the {args.concurrency}-concurrent phase (process and its children; "
          f"the client is this process)\n")
    print(cpu_table(results))
    spent = budget(results)
    if spent:
        print(f"\n{spent}")
    if hops:
        print(f"\nwhere a {piped[0].target.protocol} pipeline request's time goes (producer timestamps of its "
              f"records on each topic; ms resolution)\n")
        print(hops)


if __name__ == "__main__":
    main()
