"""A stop asked for while ``dataflow up`` starts is honoured at the next stage, even when the signal
handler's exception is lost (one raised inside the interpreter's fork hooks is swallowed)."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from dataflow_cli.demo.stack import Stack, StackInterrupted, UpOptions

STAGES = ["_start_broker", "_start_mlserver", "_start_scheduler", "_start_engine", "_start_model_gateway",
          "_load_models", "_load_pipelines", "_wait_pipelines_ready", "_start_pipeline_gateway",
          "_wait_gateway_ready", "_probe"]


def stack_of_stages(monkeypatch, tmp_path, ran: list[str], on_stage: Callable[[Stack, str], None]) -> Stack:
    """A Stack whose stages only record their names (and call ``on_stage``)."""
    stack = Stack(UpOptions(state_dir=tmp_path))
    monkeypatch.setattr(stack, "_parse_manifests", lambda: None)
    monkeypatch.setattr(stack, "_check_ports_free", lambda: None)
    for name in STAGES:
        def stage(name: str = name) -> None:
            ran.append(name)
            on_stage(stack, name)
        monkeypatch.setattr(stack, name, stage)
    return stack


def test_a_stop_requested_during_a_stage_stops_before_the_next(monkeypatch, tmp_path):
    def signal_during_scheduler(stack: Stack, name: str) -> None:
        if name == "_start_scheduler":  # the signal arrives here and its exception is lost
            stack.request_stop("SIGINT")

    ran: list[str] = []
    stack = stack_of_stages(monkeypatch, tmp_path, ran, signal_during_scheduler)
    with pytest.raises(StackInterrupted, match="SIGINT"):
        stack.start()
    assert ran == ["_start_broker", "_start_mlserver", "_start_scheduler"]


def test_without_a_stop_every_stage_runs_in_order(monkeypatch, tmp_path):
    ran: list[str] = []
    stack = stack_of_stages(monkeypatch, tmp_path, ran, lambda stack, name: None)
    assert stack.start() is stack
    assert ran == STAGES
