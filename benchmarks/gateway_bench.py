"""Pipeline gateway throughput and latency with tritonclient, next to the same model called directly.

``python -m benchmarks.gateway_bench [--requests N] [--concurrency C]``

Starts the whole stack once (``dataflow up``'s ``Stack``: embedded broker, MLServer with the sample
models, scheduler, one engine, model and pipeline gateways) with the one-step ``tfsimple`` pipeline
(pipeline input -> ``tfsimple1`` -> pipeline output), then, in the same run, sends the same
``tfsimple1`` request (INT32 [1,16] x 2) with unmodified tritonclient:

* directly to MLServer, REST (JSON) and gRPC: the model's own cost, the floor;
* through the pipeline gateway, REST with the binary tensor extension (tritonclient's default),
  REST JSON, and gRPC: gateway -> Kafka -> engine -> model gateway -> MLServer and back.

Each scenario: a warm-up, then ``--requests`` calls from ``--concurrency`` threads, each with its
own client. req/s = calls / wall time; p50 / p99 = per-call latency under that concurrency; and
the same with one thread (``--sequential`` calls) for the latency of a lone request. The
scenarios run in ``--rounds`` rounds, in reverse order every other round, and each row adds up
its rounds: on a shared machine whichever scenario runs last would otherwise take the drift.
Prints one markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
A = np.arange(1, 17, dtype=np.int32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.int32)


# Calls through the gateway give up after this many seconds (Seldon-Request-Timeout): a lost
# answer is counted as an error instead of holding a client thread for the pipeline's default.
GATEWAY_TIMEOUT = {"seldon-request-timeout": "10"}


def _http_call(url: str, model: str, binary: bool, headers: dict | None = None):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(A, binary_data=binary)
    inputs[1].set_data_from_numpy(B, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]

    def call():
        # a copy: tritonclient.http adds Inference-Header-Content-Length to the dict it is given
        r = client.infer(model, inputs, outputs=outputs, headers=dict(headers) if headers else None)
        assert np.array_equal(r.as_numpy("OUTPUT0"), A + B)

    return call, client.close


def _grpc_call(url: str, model: str, headers: dict | None = None):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(A)
    inputs[1].set_data_from_numpy(B)

    def call():
        r = client.infer(model, inputs, headers=headers)
        assert np.array_equal(r.as_numpy("OUTPUT0"), A + B)

    return call, client.close


def _run(make, requests: int, threads: int) -> tuple[float, list[float], list[BaseException]]:
    """(wall seconds, latencies in ms of the calls that succeeded, errors) of ``requests`` calls split
    over ``threads`` clients. Each thread makes its own client (tritonclient.http's gevent client
    cannot be shared between threads). A failed warm-up call stops the run."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    failed: list[BaseException] = []
    lock = threading.Lock()
    per_thread = [requests // threads + (1 if i < requests % threads else 0) for i in range(threads)]
    ready = threading.Barrier(threads + 1)
    go = threading.Event()

    def worker(n):
        mine = []
        call, close = make()
        try:
            for _ in range(5):  # warm-up: connection open, code paths hot
                call()
        except BaseException as exc:
            errors.append(exc)
        ready.wait()
        go.wait()
        try:
            for _ in range(0 if errors else n):
                t0 = time.perf_counter()
                try:
                    call()
                except Exception as exc:
                    failed.append(exc)
                    continue
                mine.append((time.perf_counter() - t0) * 1000)
        finally:
            close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=worker, args=(n,)) for n in per_thread]
    for w in workers:
        w.start()
    ready.wait()
    t0 = time.perf_counter()
    go.set()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"warm-up calls failed: {errors[0]}") from errors[0]
    return wall, latencies, failed


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="calls per scenario under concurrency (default 1000)")
    ap.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    ap.add_argument("--sequential", type=int, default=200, help="calls per scenario from one thread (default 200)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over the scenarios, order reversed each round "
                                                          "(default 2); --requests and --sequential are per round")
    args = ap.parse_args(argv)

    import tempfile

    from dataflow_cli.demo.stack import Stack, UpOptions

    state = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    opts = UpOptions(kafka_port=0, scheduler_port=0, chainer_port=0, http_port=0, grpc_port=0,
                     mlserver_http_port=0, mlserver_grpc_port=0, metrics_port=0,
                     pipelines=[REPO / "examples" / "pipelines" / "tfsimple.yaml"], state_dir=state,
                     ready_timeout=240)
    stack = Stack(opts, out=open(os.devnull, "w"))
    print(f"starting the stack (broker, MLServer, scheduler, engine, gateways); logs kept in {state}/logs ...",
          file=sys.stderr, flush=True)
    stack.start()
    try:
        ml_http = f"{opts.host}:{stack.mlserver_http_port}"
        ml_grpc = f"{opts.host}:{stack.mlserver_grpc_port}"
        gw_http = stack.inference_url.split("://")[-1]
        gw_grpc = stack.inference_grpc
        scenarios = [
            ("MLServer direct, REST JSON", lambda: _http_call(ml_http, "tfsimple1", False)),
            ("MLServer direct, gRPC", lambda: _grpc_call(ml_grpc, "tfsimple1")),
            ("pipeline gateway, REST binary", lambda: _http_call(gw_http, "tfsimple", True, GATEWAY_TIMEOUT)),
            ("pipeline gateway, REST JSON", lambda: _http_call(gw_http, "tfsimple", False, GATEWAY_TIMEOUT)),
            ("pipeline gateway, gRPC", lambda: _grpc_call(gw_grpc, "tfsimple", GATEWAY_TIMEOUT)),
        ]
        lone: dict[str, list[float]] = {name: [] for name, _ in scenarios}
        loaded: dict[str, list[float]] = {name: [] for name, _ in scenarios}
        walls: dict[str, float] = {name: 0.0 for name, _ in scenarios}
        failed: dict[str, list[BaseException]] = {name: [] for name, _ in scenarios}
        for r in range(args.rounds):
            for name, make in (scenarios if r % 2 == 0 else scenarios[::-1]):
                print(f"round {r + 1}: {name} ...", file=sys.stderr, flush=True)
                _wall, lat, errs = _run(make, args.sequential, 1)
                lone[name] += lat
                failed[name] += errs
                wall, lat, errs = _run(make, args.requests, args.concurrency)
                walls[name] += wall
                loaded[name] += lat
                failed[name] += errs
        rows = [(name, statistics.median(lone[name]), _pct(lone[name], 99), len(loaded[name]) / walls[name],
                 _pct(loaded[name], 50), _pct(loaded[name], 99), len(failed[name])) for name, _ in scenarios]
        for name, errs in failed.items():
            for exc in errs[:3]:
                print(f"{name}: failed call: {exc}", file=sys.stderr)
    finally:
        stack.stop()
    c = args.concurrency
    print(f"\n{args.rounds} rounds of {args.sequential} sequential calls and {args.requests} calls from {c} threads "
          f"per scenario; model tfsimple1 (INT32 [1,16] x 2), pipeline tfsimple (one step)\n")
    print(f"| scenario | 1 thread p50 ms | 1 thread p99 ms | {c} threads req/s | {c} threads p50 ms "
          f"| {c} threads p99 ms | failed calls |")
    print("|---|---|---|---|---|---|---|")
    for name, p50_1, p99_1, rate, p50, p99, nfailed in rows:
        print(f"| {name} | {p50_1:.1f} | {p99_1:.1f} | {rate:,.0f} | {p50:.1f} | {p99:.1f} | {nfailed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
