"""Knobs of the compiled topology that are not in the PipelineUpdateMessage (engine settings)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TopologySettings:
    # ``kafka.join.window.millis``: window of joins and trigger gates whose joinWindowMs is 0/unset.
    default_join_window_ms: int = 60_000
    # The reference ignores ``passEmptyResponses`` (a known reference bug). We honour it: a step with the
    # flag set forwards a message even when no tensor survived selection. Set False to mimic the reference.
    honour_pass_empty_responses: bool = True
    # Batch steps. The reference only batches single-source steps feeding an ``inputs`` topic.
    enable_batching: bool = True
    # Cycle counters (``allowCycles``) of requests that never reach the pipeline output are removed after
    # this long without a visit (the reference keeps them forever).
    cycle_counter_ttl_ms: int = 3_600_000
    # Time each step's work per record for ``dataflow_step_latency_seconds`` (two clock reads and
    # a bucket increment). Off only to measure what it costs (``python -m benchmarks.run``).
    step_latency: bool = True

    @classmethod
    def coerce(cls, settings: object) -> TopologySettings:
        """``TopologySettings`` from None, itself, or a runtime config carrying ``join_window_ms``
        (``dataflow.runtime.RuntimeConfig``), so runtimes may pass their own config object."""
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        window = getattr(settings, "default_join_window_ms", None) or getattr(settings, "join_window_ms", None)
        kwargs: dict[str, Any] = {"default_join_window_ms": int(window)} if window else {}
        timing = getattr(settings, "step_latency", None)
        if timing is not None:
            kwargs["step_latency"] = bool(timing)
        return cls(**kwargs)
