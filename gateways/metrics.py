"""Prometheus metrics of the gateways: the pipeline gateway's with the reference's names and labels,
the model gateway's per model (our names, listed in the README's metrics table)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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


class ModelMetrics:
    """Per served model: calls by outcome, call latency, calls in flight (``dataflow model-gateway
    --metrics-port``). A model's labelled children are looked up once, when it starts being served."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.calls = Counter("dataflow_model_gateway_infer", "Model calls by outcome: ok (answer to "
                             "model.<m>.outputs) or error (to the errors topic)", ["model", "outcome"],
                             registry=self.registry)
        self.seconds = Histogram("dataflow_model_gateway_infer_seconds", "Model call latency (parse, OIP call)",
                                 ["model"], registry=self.registry)
        self.in_flight = Gauge("dataflow_model_gateway_in_flight", "Model calls awaiting an answer",
                               ["model"], registry=self.registry)

    def model(self, name: str) -> ModelSeries:
        return ModelSeries(self.calls.labels(name, "ok"), self.calls.labels(name, "error"),
                           self.seconds.labels(name), self.in_flight.labels(name))

    def forget(self, name: str) -> None:
        """Stop exporting a model that is no longer served."""
        for metric, labels in ((self.calls, (name, "ok")), (self.calls, (name, "error")),
                               (self.seconds, (name,)), (self.in_flight, (name,))):
            try:
                metric.remove(*labels)
            except KeyError:
                pass

    def serve(self, port: int, addr: str = "0.0.0.0"):
        return start_http_server(port, addr=addr, registry=self.registry)


class ModelSeries:
    __slots__ = ("error", "in_flight", "ok", "seconds")

    def __init__(self, ok, error, seconds, in_flight) -> None:
        self.ok, self.error, self.seconds, self.in_flight = ok, error, seconds, in_flight
