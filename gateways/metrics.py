"""Prometheus metrics of the pipeline gateway, with the reference's names and labels (spec 5.6)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

SERVER_NAME = "pipeline-gateway"
METHOD_REST = "rest"
METHOD_GRPC = "grpc"


class PipelineMetrics:
    """``seldon_pipeline_infer_api_seconds`` and the four counters; own registry (tests can make many)."""

    def __init__(self, registry: CollectorRegistry | None = None, server_name: str = SERVER_NAME) -> None:
        self.registry = registry or CollectorRegistry()
        self.server = server_name
        self.histogram = Histogram("seldon_pipeline_infer_api_seconds", "A histogram of latencies for pipeline gateway",
                                   ["server", "pipeline", "method", "code"], registry=self.registry)
        self.count = Counter("seldon_pipeline_infer", "A count of pipeline gateway calls",
                             ["server", "pipeline", "method_type", "code"], registry=self.registry)
        self.seconds = Counter("seldon_pipeline_infer_seconds", "Cumulative latency of pipeline gateway calls",
                               ["server", "pipeline", "method_type", "code"], registry=self.registry)
        self.agg_count = Counter("seldon_pipeline_aggregate_infer", "A count of pipeline gateway calls (aggregate)",
                                 ["server", "method_type"], registry=self.registry)
        self.agg_seconds = Counter("seldon_pipeline_aggregate_infer_seconds",
                                   "Cumulative latency of pipeline gateway calls (aggregate)",
                                   ["server", "method_type"], registry=self.registry)
        self._series: dict[str, set[tuple[str, str]]] = {}

    def observe(self, pipeline: str, method: str, seconds: float, code: str, *, per_pipeline: bool = True) -> None:
        """Count one call. ``per_pipeline=False`` (calls for resources the gateway does not
        serve) updates only the aggregates: per-name series for made-up names would grow the
        registry with every new name a client sends."""
        if per_pipeline:
            self.histogram.labels(self.server, pipeline, method, code).observe(seconds)
            self.count.labels(self.server, pipeline, method, code).inc()
            self.seconds.labels(self.server, pipeline, method, code).inc(seconds)
            self._series.setdefault(pipeline, set()).add((method, code))
        self.agg_count.labels(self.server, method).inc()
        self.agg_seconds.labels(self.server, method).inc(seconds)

    def forget(self, pipeline: str) -> None:
        """Drop the per-pipeline series of an unloaded resource (they are not exported forever)."""
        for method, code in self._series.pop(pipeline, ()):
            for metric in (self.histogram, self.count, self.seconds):
                try:
                    metric.remove(self.server, pipeline, method, code)
                except KeyError:
                    pass

    def serve(self, port: int, addr: str = "0.0.0.0"):
        """Expose ``/metrics`` on ``port`` (a daemon thread); returns the server."""
        return start_http_server(port, addr=addr, registry=self.registry)
