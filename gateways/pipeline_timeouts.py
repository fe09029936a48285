"""How long the pipeline gateway waits for a pipeline's answer by default.

A fixed gateway timeout is wrong both ways: shorter than a pipeline's join window (default 60 s)
it turns an outer join's partial answer, due when the window closes, into a 504; and it cannot
know how many model calls a request goes through. So each pipeline's default is derived from its
spec, as the scheduler announces it: the longest path from the pipeline's input to its output,
where each step costs its join window (when it joins several sources or waits for triggers), its
batch window, and one model call (the model gateway's per-call timeout, after which the model
gateway answers with an error record). The gateway's own timeout is a floor under this.

A step batching by size alone waits for as many requests as it takes: such a pipeline has no
bound (``None``) and its requests wait until answered or until the caller gives up (closing the
connection or a gRPC deadline ends the wait and frees its entry), unless a request says otherwise
with the ``Seldon-Request-Timeout`` header.
"""
from __future__ import annotations

from chainer_api import scheduler_pb2

# The engine's default join window (SELDON_KAFKA_JOIN_WINDOW_MILLIS) for a join without its own.
DEFAULT_JOIN_WINDOW_MS = 60_000
# The model gateway's default per-call timeout (MODELGATEWAY_WORKER_TIMEOUT_MS).
MODEL_TIMEOUT_S = 120.0
# The per-request override: seconds (a decimal number); REST header or gRPC metadata.
TIMEOUT_HEADER = "seldon-request-timeout"


class BadTimeout(ValueError):
    """A ``Seldon-Request-Timeout`` value that is not a positive number of seconds."""


def request_timeout(values: list[str]) -> float | None:
    """The override a caller gave (the first value), or None when there is none."""
    if not values:
        return None
    raw = values[0].strip()
    try:
        seconds = float(raw)
    except ValueError:
        raise BadTimeout(f"{TIMEOUT_HEADER} must be a number of seconds, got {raw!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise BadTimeout(f"{TIMEOUT_HEADER} must be a positive number of seconds, got {raw!r}")
    return seconds


def _window_s(window_ms: int, default_join_window_ms: int) -> float:
    return (window_ms or default_join_window_ms) / 1000.0


def answer_bound_s(pipeline: scheduler_pb2.Pipeline, *, default_join_window_ms: int = DEFAULT_JOIN_WINDOW_MS,
                   model_timeout_s: float = MODEL_TIMEOUT_S) -> float | None:
    """Seconds within which the pipeline answers or fails, or None when nothing bounds it."""
    steps = {s.name: s for s in pipeline.steps}
    cost: dict[str, float | None] = {}
    visiting: set[str] = set()

    def deps(refs) -> list[str]:
        # Step references read ``step.outputs[.tensor]`` / ``step.inputs[.tensor]``; anything else
        # (this pipeline's inputs, another pipeline) is where a request enters, at cost 0.
        return [r.split(".")[0] for r in refs if r.split(".")[0] in steps and r.split(".")[0] != pipeline.name]

    def after(refs) -> float | None:
        worst = 0.0
        for d in deps(refs):
            c = step_cost(d)
            if c is None:
                return None
            worst = max(worst, c)
        return worst

    def step_cost(name: str) -> float | None:
        if name in cost:
            return cost[name]
        if name in visiting:  # a cycle (allowCycles): its revisits are not bounded here
            return 0.0
        visiting.add(name)
        s = steps[name]
        before = after([*s.inputs, *s.triggers])
        own = model_timeout_s
        if len(s.inputs) > 1 or s.triggers:
            own += _window_s(s.joinWindowMs, default_join_window_ms)
        if s.HasField("batch"):
            b = s.batch
            if b.HasField("windowMs") and b.windowMs:
                own += b.windowMs / 1000.0
            elif b.HasField("size") and b.size > 1:
                before = None  # waits for `size` requests, however long that takes
        visiting.discard(name)
        cost[name] = None if before is None else before + own
        return cost[name]

    start = 0.0
    if pipeline.HasField("input") and (len(pipeline.input.externalInputs) > 1 or pipeline.input.externalTriggers):
        start = _window_s(pipeline.input.joinWindowMs, default_join_window_ms)
    out_steps = list(pipeline.output.steps) if pipeline.HasField("output") else []
    if not out_steps and steps:
        out_steps = [pipeline.steps[-1].name]
    total = after(out_steps)
    if total is None:
        return None
    if len(out_steps) > 1:
        total += _window_s(pipeline.output.joinWindowMs, default_join_window_ms)
    return start + total


def default_timeout_s(pipeline: scheduler_pb2.Pipeline, floor_s: float, **kwargs) -> float | None:
    """The pipeline's default request timeout: ``answer_bound_s``, never below the gateway's
    ``floor_s``; None (no timeout) when the pipeline's answer has no bound."""
    bound = answer_bound_s(pipeline, **kwargs)
    return None if bound is None else max(floor_s, bound)
