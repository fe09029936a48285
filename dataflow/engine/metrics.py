"""Prometheus metrics of an engine replica, served as ``/metrics`` on its health port.

Nothing is counted for metrics: the record path already keeps plain counters (per step in
``dataflow.topology.stats``, per runner in ``KafkaRunner.stats``), and this collector reads them
when Prometheus scrapes, so a record costs no label lookup and no lock. Runners that keep no such
counters (the Faust runtime runs in worker processes) export only ``dataflow_pipeline_info``.

Every series is labelled ``pipeline`` and ``version``; step series also ``step`` (the step name
of the Pipeline YAML, or ``input`` / ``output`` / ``error`` for the added steps). The names and
their meaning are listed in ``METRICS`` (and the README table is checked against it).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from dataflow.runtime.base import PipelineRunner
from dataflow.topology.stats import LATENCY_BUCKETS

PIPELINE_LABELS = ["pipeline", "version"]
STEP_LABELS = ["pipeline", "version", "step"]

# name (as exposed) -> (type, help). Counters are exposed with the ``_total`` suffix.
METRICS: dict[str, tuple[str, str]] = {
    "dataflow_pipeline_info": (
        "gauge", "1 per pipeline version this replica runs; labels uid and state (RUNNING, REBALANCING, ...)"),
    "dataflow_pipeline_partitions": ("gauge", "input partitions of the version assigned to this replica"),
    "dataflow_pipeline_records_polled_total": ("counter", "records read from the version's source topics"),
    "dataflow_pipeline_records_written_total": ("counter", "records produced to sinks and the error topic"),
    "dataflow_pipeline_errors_total": ("counter", "records whose processing raised (logged and skipped)"),
    "dataflow_pipeline_commits_total": ("counter", "checkpoints (outputs delivered, offsets committed)"),
    "dataflow_pipeline_restored_records_total": (
        "counter", "changelog records replayed into partition state before processing (restore progress)"),
    "dataflow_pipeline_consumer_lag": (
        "gauge", "records of a source partition not yet processed (high watermark of the last fetch minus "
                 "position); labels topic and partition"),
    "dataflow_step_records_consumed_total": (
        "counter", "records of the step's source and trigger topics offered to it"),
    "dataflow_step_records_produced_total": (
        "counter", "records the step sent to its sink (or, past maxStepRevisits, to the error topic)"),
    "dataflow_step_records_dropped_total": (
        "counter", "records the step did not pass on, by reason: filtered (another pipeline's record on a shared "
                   "topic), empty (no tensor left after selection), malformed (undecodable), trigger_ignored "
                   "(trigger without its tensors)"),
    "dataflow_step_errors_total": (
        "counter", "by reason: punctuate (a window or batch tick raised), max_revisits (a cycle exceeded "
                   "maxStepRevisits; the record went to the error topic)"),
    "dataflow_step_latency_seconds": ("histogram", "time the step spent on one record (not model time)"),
    "dataflow_step_join_buffered_records": (
        "gauge", "records held in the step's join or trigger windows, waiting for the other branches"),
    "dataflow_step_join_expired_total": ("counter", "buffered join / trigger records dropped when their window closed"),
    "dataflow_step_batch_pending_rows": ("gauge", "rows waiting in the step's pending batches"),
}

_DROPS = (("filtered", "filtered"), ("empty", "empty_dropped"), ("malformed", "malformed"),
          ("trigger_ignored", "trigger_ignored"))
_ERRORS = (("punctuate", "punctuate_errors"), ("max_revisits", "revisits_exceeded"))


def _family(name: str, labels: list[str]) -> Metric:
    kind, text = METRICS[name]
    if kind == "counter":
        return CounterMetricFamily(name.removesuffix("_total"), text, labels=labels)
    if kind == "histogram":
        return HistogramMetricFamily(name, text, labels=labels)
    return GaugeMetricFamily(name, text, labels=labels)


class EngineCollector:
    """Reads the runners of ``runners()`` (the engine's running versions) on every scrape."""

    def __init__(self, runners: Callable[[], Iterable[PipelineRunner]]):
        self._runners = runners

    def describe(self) -> list[Metric]:  # no samples at registration: collect() runs only when scraped
        return []

    def collect(self) -> list[Metric]:
        # Any: counter, gauge and histogram families each take their own add_metric arguments.
        f: dict[str, Any] = {name: _family(name, _labels(name)) for name in METRICS}
        for runner in list(self._runners()):
            msg = runner.msg
            base = [msg.pipeline, str(msg.version)]
            state = getattr(runner, "state", None)
            f["dataflow_pipeline_info"].add_metric([*base, msg.uid, getattr(state, "value", str(state))], 1)
            stats = getattr(runner, "stats", None)
            if isinstance(stats, dict):
                for name, key in (("dataflow_pipeline_records_polled_total", "consumed"),
                                  ("dataflow_pipeline_records_written_total", "produced"),
                                  ("dataflow_pipeline_errors_total", "failed"),
                                  ("dataflow_pipeline_commits_total", "commits"),
                                  ("dataflow_pipeline_restored_records_total", "restored")):
                    f[name].add_metric(base, stats.get(key, 0))
            lag = getattr(runner, "lag", None)
            for (topic, partition), value in sorted((lag() if lag is not None else {}).items()):
                f["dataflow_pipeline_consumer_lag"].add_metric([*base, topic, str(partition)], value)
            partitions = getattr(runner, "assigned_partitions", None)
            if partitions is not None:
                f["dataflow_pipeline_partitions"].add_metric(base, partitions())
            totals = getattr(runner, "step_totals", None)
            for step, snap in sorted((totals() if totals is not None else {}).items()):
                labels = [*base, step]
                s = snap.stats
                f["dataflow_step_records_consumed_total"].add_metric(labels, s.consumed)
                f["dataflow_step_records_produced_total"].add_metric(labels, s.produced)
                for reason, field in _DROPS:
                    f["dataflow_step_records_dropped_total"].add_metric([*labels, reason], getattr(s, field))
                for reason, field in _ERRORS:
                    f["dataflow_step_errors_total"].add_metric([*labels, reason], getattr(s, field))
                cumulative, buckets = 0, []
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), snap.latency.counts):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                f["dataflow_step_latency_seconds"].add_metric(labels, buckets, snap.latency.total)
                f["dataflow_step_join_buffered_records"].add_metric(labels, snap.join_buffered)
                f["dataflow_step_join_expired_total"].add_metric(labels, snap.join_expired)
                f["dataflow_step_batch_pending_rows"].add_metric(labels, snap.batch_rows)
        return list(f.values())


def _labels(name: str) -> list[str]:
    if name == "dataflow_pipeline_info":
        return [*PIPELINE_LABELS, "uid", "state"]
    if name == "dataflow_pipeline_consumer_lag":
        return [*PIPELINE_LABELS, "topic", "partition"]
    if name in ("dataflow_step_records_dropped_total", "dataflow_step_errors_total"):
        return [*STEP_LABELS, "reason"]
    return STEP_LABELS if name.startswith("dataflow_step_") else PIPELINE_LABELS


def engine_registry(runners: Callable[[], Iterable[PipelineRunner]]) -> CollectorRegistry:
    """A registry holding only the engine's collector (tests can make many)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(runners))
    return registry
