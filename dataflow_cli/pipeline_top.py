"""``dataflow pipeline top [NAME]``: per-pipeline and per-step rates from the engines' /metrics.

For users without Prometheus. Each refresh scrapes every engine's metrics endpoint (the health
port, ``dataflow.engine.metrics``), sums the replicas, and prints rates over the last interval:
one row per pipeline version (records polled and written per second, consumer lag, partitions,
errors) followed by one row per step (records in, out and dropped per second, mean step
latency, records waiting in joins and batches). ``--once`` scrapes twice, one interval apart,
prints one table and exits.
"""
from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict

from dataflow_cli import CliError
from dataflow_cli.control import table

ENV_METRICS = "DATAFLOW_ENGINE_METRICS"
DEFAULT_METRICS = "127.0.0.1:8000"

# (pipeline, version, step) -> metric name -> summed value; step "" = the version itself.
Snapshot = dict[tuple[str, str, str], dict[str, float]]


def register(ps) -> None:
    t = ps.add_parser("top", help="live per-step rates, lag, errors and waiting state, from the engines' /metrics",
                      description="Scrape the engines' Prometheus endpoints (their --health-port) and show per "
                                  "pipeline and per step: records/s in, out and dropped, mean step latency, "
                                  "consumer lag, records waiting in joins and batches, errors.")
    t.add_argument("name", nargs="?", help="only this pipeline (default: all)")
    t.add_argument("--metrics", action="append", default=None, metavar="HOST:PORT",
                   help=f"an engine's metrics endpoint (its health port); repeatable, or comma-separated in "
                        f"env {ENV_METRICS} (default {DEFAULT_METRICS})")
    t.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    t.add_argument("--once", action="store_true", help="print one table (two scrapes, one interval apart) and exit")
    t.set_defaults(handler=run_top)


def endpoints(args) -> list[str]:
    given = args.metrics or [os.environ.get(ENV_METRICS) or DEFAULT_METRICS]
    out = []
    for item in given:
        for e in item.split(","):
            e = e.strip()
            if e:
                out.append(e if "://" in e else f"http://{e}")
    return [e if e.rstrip("/").endswith("/metrics") else e.rstrip("/") + "/metrics" for e in out]


def parse(text: str, into: Snapshot | None = None) -> Snapshot:
    """The engine's series that ``top`` shows, summed by (pipeline, version, step)."""
    # imported here: the Prometheus parser adds ~10-35 ms to every `dataflow` command
    from prometheus_client.parser import text_string_to_metric_families

    snap: Snapshot = into if into is not None else defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("dataflow_"):
            continue
        for s in family.samples:
            labels = s.labels
            if "pipeline" not in labels or s.name.endswith("_bucket"):
                continue
            key = (labels["pipeline"], labels.get("version", ""), labels.get("step", ""))
            name = s.name
            if "reason" in labels:
                name = f"{name}:{labels['reason']}"
            snap[key][name] += s.value
    return snap


def scrape(urls: list[str], timeout_s: float = 5.0) -> tuple[Snapshot, list[str]]:
    """One snapshot summed over ``urls`` and the endpoints that could not be read."""
    snap: Snapshot = defaultdict(lambda: defaultdict(float))
    failed = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                parse(resp.read().decode("utf-8", "replace"), snap)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            failed.append(f"{url} ({getattr(exc, 'reason', exc)})")
    return snap, failed


PIPELINE_HEADER = ("pipeline", "version", "step", "in/s", "out/s", "dropped/s", "latency", "waiting",
                   "lag", "errors")


def _rate(cur: dict, prev: dict, name: str, dt: float) -> float:
    return max(0.0, cur.get(name, 0.0) - prev.get(name, 0.0)) / dt if dt > 0 else 0.0


def _num(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def table_rows(prev: Snapshot, cur: Snapshot, dt: float, name: str | None = None) -> list[tuple[str, ...]]:
    """Rows for ``cur`` with rates over ``dt`` seconds since ``prev``: per pipeline version, its
    steps (in the engines' order of names) below it."""
    empty: dict[str, float] = {}
    rows: list[tuple[str, ...]] = []
    versions = sorted({(p, v) for p, v, _ in cur if name is None or p == name},
                      key=lambda pv: (pv[0], int(pv[1]) if pv[1].isdigit() else 0))
    for p, v in versions:
        c, b = cur.get((p, v, ""), empty), prev.get((p, v, ""), empty)
        errors = c.get("dataflow_pipeline_errors_total", 0.0)
        steps = sorted(s for pp, vv, s in cur if (pp, vv) == (p, v) and s)
        for s in steps:
            sc = cur[(p, v, s)]
            errors += sum(val for k, val in sc.items() if k.startswith("dataflow_step_errors_total:"))
        rows.append((p, v, "*", _num(_rate(c, b, "dataflow_pipeline_records_polled_total", dt)),
                     _num(_rate(c, b, "dataflow_pipeline_records_written_total", dt)), "", "", "",
                     str(int(c.get("dataflow_pipeline_consumer_lag", 0))), str(int(errors))))
        for s in steps:
            sc, sb = cur[(p, v, s)], prev.get((p, v, s), empty)
            dropped = sum(_rate(sc, sb, k, dt) for k in sc if k.startswith("dataflow_step_records_dropped_total:"))
            dcount = sc.get("dataflow_step_latency_seconds_count", 0) - sb.get("dataflow_step_latency_seconds_count", 0)
            dsum = sc.get("dataflow_step_latency_seconds_sum", 0) - sb.get("dataflow_step_latency_seconds_sum", 0)
            latency = f"{dsum / dcount * 1e6:.0f}us" if dcount > 0 else "-"
            waiting = []
            if sc.get("dataflow_step_join_buffered_records"):
                waiting.append(f"join={int(sc['dataflow_step_join_buffered_records'])}")
            if sc.get("dataflow_step_batch_pending_rows"):
                waiting.append(f"batch={int(sc['dataflow_step_batch_pending_rows'])}")
            step_errors = sum(val for k, val in sc.items() if k.startswith("dataflow_step_errors_total:"))
            rows.append(("", "", s, _num(_rate(sc, sb, "dataflow_step_records_consumed_total", dt)),
                         _num(_rate(sc, sb, "dataflow_step_records_produced_total", dt)), _num(dropped), latency,
                         " ".join(waiting) or "-", "", str(int(step_errors))))
    return rows


def render(prev: Snapshot, cur: Snapshot, dt: float, name: str | None, failed: list[str]) -> str:
    rows = table_rows(prev, cur, dt, name)
    lines = [f"dataflow pipeline top: rates over {dt:.1f}s, {time.strftime('%H:%M:%S')}"]
    if rows:
        lines.append(table(PIPELINE_HEADER, rows))
    else:
        lines.append(f"no pipeline {name} on these engines" if name else "no pipelines running on these engines")
    for f in failed:
        lines.append(f"unreachable: {f}")
    return "\n".join(lines) + "\n"


def run_top(args) -> int:
    if args.interval <= 0:
        raise CliError(f"--interval must be positive, got {args.interval:g}")
    urls = endpoints(args)
    prev, failed = scrape(urls)
    if len(failed) == len(urls):
        raise CliError(f"cannot read engine metrics: {'; '.join(failed)}; give the engines' health ports "
                       f"with --metrics HOST:PORT (or {ENV_METRICS})")
    then = time.monotonic()
    live = not args.once and sys.stdout.isatty()
    while True:
        time.sleep(args.interval)
        cur, failed = scrape(urls)
        now = time.monotonic()
        out = render(prev, cur, now - then, args.name, failed)
        if live:
            out = "\033[H\033[2J" + out
        sys.stdout.write(out)
        sys.stdout.flush()
        if args.once:
            return 0
        prev, then = cur, now
