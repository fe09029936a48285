"""Each pipeline's default request timeout, derived from its spec as the scheduler announces it."""
import pytest

from gateways import pipeline_timeouts as pt
from scheduler_min import convert

M = 10.0  # model call timeout used below


def announced(yaml_text: str):
    """The Pipeline proto as the scheduler sends it to gateways (references normalised)."""
    return convert.to_proto(convert.from_proto(convert.pipelines_from_yaml(yaml_text)[0], version=1, uid="u"))


CHAIN = """
kind: Pipeline
metadata: {name: chain}
spec:
  steps:
    - name: a
    - name: b
      inputs: [a]
  output: {steps: [b]}
"""

OUTER_JOIN = """
kind: Pipeline
metadata: {name: oj}
spec:
  steps:
    - name: a
    - name: b
    - name: c
      inputs: [a, b]
      inputsJoinType: outer
      joinWindowMs: 2000
  output: {steps: [c]}
"""


def test_a_chain_costs_one_model_call_per_step():
    assert pt.answer_bound_s(announced(CHAIN), model_timeout_s=M) == 2 * M


def test_joins_add_their_window_on_the_longest_path():
    assert pt.answer_bound_s(announced(OUTER_JOIN), model_timeout_s=M) == M + 2.0 + M
    no_window = OUTER_JOIN.replace("      joinWindowMs: 2000\n", "")
    assert pt.answer_bound_s(announced(no_window), model_timeout_s=M, default_join_window_ms=60_000) == M + 60 + M
    out_join = CHAIN.replace("output: {steps: [b]}", "output: {steps: [a, b], joinWindowMs: 500}")
    assert pt.answer_bound_s(announced(out_join), model_timeout_s=M) == 2 * M + 0.5


def test_batches_add_their_window_and_size_alone_has_no_bound():
    windowed = CHAIN.replace("      inputs: [a]\n", "      inputs: [a]\n      batch: {size: 4, windowMs: 3000}\n")
    assert pt.answer_bound_s(announced(windowed), model_timeout_s=M) == 2 * M + 3
    by_size = CHAIN.replace("      inputs: [a]\n", "      inputs: [a]\n      batch: {size: 4}\n")
    assert pt.answer_bound_s(announced(by_size), model_timeout_s=M) is None
    assert pt.default_timeout_s(announced(by_size), 30.0, model_timeout_s=M) is None


def test_the_gateway_timeout_is_a_floor():
    assert pt.default_timeout_s(announced(CHAIN), 30.0, model_timeout_s=M) == 30.0
    assert pt.default_timeout_s(announced(CHAIN), 1.0, model_timeout_s=M) == 2 * M


def test_request_override():
    assert pt.request_timeout([]) is None
    assert pt.request_timeout(["2.5"]) == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(pt.BadTimeout, match="seldon-request-timeout"):
            pt.request_timeout([bad])
