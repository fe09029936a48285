"""The one error a bad PipelineUpdateMessage produces: it names the step (by its sink) and the reason."""
from __future__ import annotations


class TopologyError(ValueError):
    """A PipelineUpdateMessage cannot be compiled. ``step`` is the sink topic of the offending step
    (or ``""`` for message-level problems); ``reason`` says what was wrong."""

    def __init__(self, step: str, reason: str):
        self.step = step
        self.reason = reason
        where = f"step with sink {step}" if step else "pipeline update"
        super().__init__(f"{where}: {reason}")
