"""What many loaded pipelines cost the whole stack, and whether it still answers.

    python -m benchmarks.pipelines                         # 100 pipelines
    python -m benchmarks.pipelines --counts 100,300        # several sizes, one after the other

Starts the stack as ``dataflow up`` does (embedded broker, MLServer with the sample models,
scheduler, one engine, model gateway, pipeline gateway; all ports free ones), then for each count:
loads that many 2-step chain pipelines (``tfsimple1 -> tfsimple2``, the ``tfsimples`` sample under
other names) through the scheduler, and prints

* seconds until the scheduler reports every one ``PipelineReady`` and until the pipeline gateway
  reports every one ready;
* RSS and threads of the engine and both gateways, and the idle CPU of engine, gateways and broker
  over ``--idle-s`` with no traffic (MLServer is not counted: it is the models, not the stack);
* p50 / p99 of sequential REST requests spread over 10 of the pipelines (every answer checked);

then unloads them all and prints the same figures again. The first row is the stack with no
pipeline loaded.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

COMPONENTS = ("engine", "model-gateway", "pipeline-gateway", "broker")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def with_children(pid: int) -> list[int]:
    """``pid`` and every process below it (the broker runs under a launcher process)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        todo += kids
    return found


def proc_figures(pid: int) -> tuple[float, int, float]:
    """(RSS MB, threads, CPU seconds) of a process and its children."""
    rss = threads = cpu = 0.0
    for p in with_children(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            fields = _stat(p)
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss += int(status["VmRSS"].split()[0]) / 1024
        threads += int(status["Threads"])
    return rss, int(threads), cpu


def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Cores used by each process over ``seconds`` of no traffic."""
    before = {name: proc_figures(pid)[2] for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: (proc_figures(pid)[2] - before[name]) / seconds for name, pid in pids.items()}


def chain(name: str):
    from scheduler_min.manifest import pipelines_from_yaml

    text = f"""
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: {name}
spec:
  steps:
    - name: tfsimple1
    - name: tfsimple2
      inputs: [tfsimple1]
      tensorMap:
        tfsimple1.outputs.OUTPUT0: INPUT0
        tfsimple1.outputs.OUTPUT1: INPUT1
  output:
    steps: [tfsimple2]
"""
    return pipelines_from_yaml(text.encode(), name)[0]


def wait_until(check, timeout_s: float, what: str, stack) -> float:
    start = time.monotonic()
    while not check():
        stack._check_children()
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - start


def gateway_ready(stack, names: list[str]) -> bool:
    from dataflow_cli.demo.stack import http_status

    return all(http_status(f"{stack.inference_url}/v2/pipelines/{n}/ready") == 200 for n in names)


def request_latencies(stack, names: list[str], n: int) -> list[float]:
    from dataflow_cli.demo.stack import PROBE_EXPECTED, PROBE_REQUEST

    body = json.dumps(PROBE_REQUEST).encode()
    out = []
    for i in range(n):
        name = names[i % len(names)]
        req = urllib.request.Request(f"{stack.inference_url}/v2/models/{name}/infer", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "seldon-model": f"{name}.pipeline"})
        start = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        out.append(time.perf_counter() - start)
        got = {o["name"]: o["data"] for o in answer["outputs"]}
        if got != PROBE_EXPECTED:
            raise SystemExit(f"wrong answer from {name}: {got}")
    return out


def figures(stack, pids: dict[str, int], idle_s: float) -> dict:
    row = {}
    for name in ("engine", "model-gateway", "pipeline-gateway"):
        rss, threads, _ = proc_figures(pids[name])
        row[f"{name} MB"], row[f"{name} threads"] = rss, threads
    cpu = idle_cpu(pids, idle_s)
    row["idle cores"] = cpu
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="100", help="comma list of pipeline counts (default 100)")
    parser.add_argument("--idle-s", type=float, default=30.0, help="idle CPU measuring window (default 30)")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests over 10 pipelines")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-phase timeout (s)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]

    import grpc

    from chainer_api import scheduler_pb2
    from dataflow_cli.demo.stack import Stack, UpOptions

    with tempfile.TemporaryDirectory() as tmp:
        options = UpOptions(kafka_port=0, scheduler_port=0, chainer_port=0, http_port=0, grpc_port=0,
                            mlserver_http_port=0, mlserver_grpc_port=0, metrics_port=0, pipelines=[],
                            state_dir=Path(tmp), log_level="WARNING")
        stack = Stack(options, out=open(os.devnull, "w"))
        rows = []
        try:
            stack.start()
            pids = {c.name: c.pid for c in stack.children if getattr(c, "name", None) in COMPONENTS}
            time.sleep(2.0)
            rows.append(("baseline", 0, "", "", figures(stack, pids, args.idle_s), None))
            channel, stub = stack._scheduler_stub()
            for count in counts:
                names = [f"bench-{count}-{i}" for i in range(count)]
                start = time.monotonic()
                for name in names:
                    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=chain(name)), timeout=30)

                def all_ready() -> bool:
                    try:
                        states = stack.pipeline_states()
                    except grpc.RpcError:
                        return False
                    return all(states.get(n, ("",))[0] == "PipelineReady" for n in names)  # noqa: B023  # called within this iteration

                wait_until(all_ready, args.timeout, f"{count} pipelines Ready", stack)
                ready_s = time.monotonic() - start
                wait_until(lambda: gateway_ready(stack, names), args.timeout, "the gateway", stack)  # noqa: B023  # called within this iteration
                gateway_s = time.monotonic() - start
                lat = request_latencies(stack, names[:10], args.requests)
                time.sleep(2.0)
                rows.append((f"{count} loaded", count, f"{ready_s:.1f}", f"{gateway_s:.1f}",
                             figures(stack, pids, args.idle_s), lat))
                start = time.monotonic()
                for name in names:
                    stub.UnloadPipeline(scheduler_pb2.UnloadPipelineRequest(name=name), timeout=30)

                def all_gone() -> bool:
                    try:
                        states = stack.pipeline_states()
                    except grpc.RpcError:
                        return False
                    return all(states.get(n, ("PipelineTerminated",))[0] == "PipelineTerminated" for n in names)  # noqa: B023  # called within this iteration

                wait_until(all_gone, args.timeout, f"{count} pipelines Terminated", stack)
                took = time.monotonic() - start
                time.sleep(5.0)
                rows.append((f"{count} unloaded", 0, f"{took:.1f}", "", figures(stack, pids, args.idle_s), None))
            channel.close()
        finally:
            stack.stop()

    print(f"\nthe dataflow up stack (embedded broker, 1 engine); pipelines are 2-step chains "
          f"tfsimple1 -> tfsimple2; idle CPU over {args.idle_s:g} s; {args.requests} sequential REST "
          f"requests over 10 pipelines\n")
    print("| state | pipelines | s to all Ready (unload: Terminated) | s to gateway ready | engine MB / threads "
          "| model gw MB / threads | pipeline gw MB / threads | idle cores engine / gws / broker / total "
          "| requests p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n, ready, gw, f, lat in rows:
        cpu = f["idle cores"]
        gws = cpu["model-gateway"] + cpu["pipeline-gateway"]
        total = sum(cpu.values())
        reqs = ""
        if lat:
            q = statistics.quantiles(lat, n=100)
            reqs = f"{q[49] * 1000:.0f} / {q[98] * 1000:.0f}"
        print(f"| {name} | {n} | {ready} | {gw} | {f['engine MB']:.0f} / {f['engine threads']} "
              f"| {f['model-gateway MB']:.0f} / {f['model-gateway threads']} "
              f"| {f['pipeline-gateway MB']:.0f} / {f['pipeline-gateway threads']} "
              f"| {cpu['engine']:.2f} / {gws:.2f} / {cpu['broker']:.2f} / {total:.2f} | {reqs} |")


if __name__ == "__main__":
    main()
