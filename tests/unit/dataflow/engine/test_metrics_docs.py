"""The README's metrics table and the Grafana dashboard name only metrics the components expose,
and the table lists every engine and model gateway metric."""
from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from dataflow.engine.metrics import METRICS
from gateways.metrics import ModelMetrics, PipelineMetrics

ROOT = Path(__file__).resolve().parents[4]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def gateway_names(registry: CollectorRegistry) -> dict[str, str]:
    """Documented name (counters with ``_total``) -> type, from a gateway's registry."""
    out = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = family.type
    return out


def documented() -> dict[str, str]:
    names = {name: kind for name, (kind, _) in METRICS.items()}
    names.update(gateway_names(ModelMetrics().registry))
    names.update(gateway_names(PipelineMetrics().registry))
    return names


def exposed_series() -> set[str]:
    out = set()
    for name, kind in documented().items():
        base = name.removesuffix("_total")
        out |= {base + s for s in SUFFIXES[kind]}
    return out


def test_readme_table_lists_exactly_the_exposed_metrics():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    in_table = {n for row in rows for n in re.findall(r"`((?:dataflow|seldon)_\w+)`", row.split("|")[1])}
    assert in_table == set(documented())


def test_dashboard_queries_use_exposed_series_only():
    dashboard = json.loads((ROOT / "examples" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    used = {n for e in exprs for n in re.findall(r"\b((?:dataflow|seldon)_\w+)", e)}
    assert used <= exposed_series(), used - exposed_series()
    # every engine metric is on the dashboard (info and commits aside)
    engine = {n.removesuffix("_total") for n in METRICS} - {"dataflow_pipeline_info", "dataflow_pipeline_commits"}
    assert {u.removesuffix("_total").removesuffix("_bucket") for u in used} >= engine
