"""Validation of large pipelines: linear graph walks, same verdicts and messages as on small ones.

Long chains used to hit Python's recursion limit and fan-in/fan-out shapes took exponential time
(the cycle check walked every path). The bounds below are pytest-timeout guards, not measurements.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainer_api import scheduler_pb2
from dataflow.kafka import TopicNamer
from scheduler_min import convert, validation
from scheduler_min.convert import PipelineVersion, Step
from scheduler_min.validation import PipelineValidationError


def chain(n, name="p", cycle=False):
    """s0 <- s1 <- ... <- s{n-1}; with ``cycle`` s0 also reads the last step."""
    p = scheduler_pb2.Pipeline(name=name)
    for i in range(n):
        inputs = [f"s{i - 1}"] if i else ([f"s{n - 1}"] if cycle else [])
        p.steps.add(name=f"s{i}", inputs=inputs)
    p.output.steps.append(f"s{n - 1}")
    return p


def layered(layers, width, name="p"):
    """Every step reads all steps of the previous layer (a step count of ``layers * width``)."""
    p = scheduler_pb2.Pipeline(name=name)
    prev: list[str] = []
    for layer in range(layers):
        cur = [f"l{layer}-{w}" for w in range(width)]
        for step in cur:
            p.steps.add(name=step, inputs=[f"{up}.outputs" for up in prev])
        prev = cur
    p.output.steps.extend(prev)
    return p


def ladder(n, name="p"):
    """Each step reads the previous two (the number of paths grows like Fibonacci)."""
    p = scheduler_pb2.Pipeline(name=name)
    for i in range(n):
        p.steps.add(name=f"s{i}", inputs=[f"s{j}" for j in (i - 1, i - 2) if j >= 0])
    return p


@pytest.mark.timeout(10)
def test_long_chain_validates_and_converts():
    pv = convert.from_proto(chain(2000))
    assert len(pv.steps) == 2000
    assert pv.steps["s1999"].inputs == ["s1998.outputs"]
    msg = convert.creation_message(pv, TopicNamer())
    assert len(msg.updates) == 2000 + 2  # steps, output, error


@pytest.mark.timeout(10)
def test_layered_pipeline_validates():
    pv = convert.from_proto(layered(10, 3))
    assert len(pv.steps) == 30
    assert pv.steps["l9-0"].inputs == ["l8-0.outputs", "l8-1.outputs", "l8-2.outputs"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("shape", [lambda: layered(15, 2), lambda: layered(6, 5), lambda: ladder(40)])
def test_fan_in_fan_out_shapes_validate(shape):
    proto = shape()
    assert len(convert.from_proto(proto).steps) == len(proto.steps)


@pytest.mark.timeout(10)
def test_long_cycle_has_the_small_cycle_message():
    with pytest.raises(PipelineValidationError) as info:
        convert.from_proto(chain(2000, cycle=True))
    assert str(info.value) == "pipeline p has a cycle"


@pytest.mark.timeout(10)
def test_long_cycle_through_a_trigger():
    p = chain(2000)
    p.steps[0].triggers.append("s1999")
    with pytest.raises(PipelineValidationError) as info:
        convert.from_proto(p)
    assert str(info.value) == "pipeline p has a cycle"


@pytest.mark.timeout(10)
def test_cycle_after_a_large_acyclic_part():
    p = layered(10, 3)
    p.steps.add(name="x", inputs=["y"])
    p.steps.add(name="y", inputs=["x", "l9-2"])
    with pytest.raises(PipelineValidationError) as info:
        convert.from_proto(p)
    assert str(info.value) == "pipeline p has a cycle"


@pytest.mark.timeout(10)
def test_long_cycle_allowed():
    p = chain(2000, cycle=True)
    p.allowCycles = True
    assert convert.from_proto(p).allow_cycles


def test_self_loop_is_a_cycle():
    p = scheduler_pb2.Pipeline(name="p")
    p.steps.add(name="a", inputs=["a"])
    with pytest.raises(PipelineValidationError) as info:
        convert.from_proto(p)
    assert str(info.value) == "pipeline p has a cycle"


# ------------------------------------------------------------------------------------------
# the previous (recursive, unmemoised) cycle check as an oracle on small graphs
# ------------------------------------------------------------------------------------------

def _old_check_cycles(pv) -> None:
    if pv.allow_cycles:
        return
    checked: set[str] = set()

    def visit(name: str, path: set[str]) -> None:
        path.add(name)
        for up in validation._upstream(pv, pv.steps[name]):
            if up in path:
                raise PipelineValidationError(f"pipeline {pv.name} has a cycle")
            if up in pv.steps:
                visit(up, path)
        path.discard(name)

    for name in pv.steps:
        if name in checked:
            continue
        path: set[str] = set()
        visit(name, path)
        checked.add(name)


def _old_validate(pv) -> None:
    v = validation
    for check in (v._check_name, v._check_steps_exist, v._check_step_name_not_pipeline, v._check_step_inputs,
                  v._check_step_triggers, v._check_references_exist, v._check_outputs, _old_check_cycles,
                  v._check_inputs_and_triggers_differ, v._check_pipeline_input):
        check(pv)


def _outcome(fn, pv):
    try:
        fn(pv)
    except PipelineValidationError as exc:
        return type(exc), str(exc)
    return None


NAMES = ["a", "b", "c", "d", "e", "f"]


@st.composite
def pipelines(draw):
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    targets = names + ["p", "zz"]  # the pipeline itself and (for triggers) an unknown name
    suffixes = st.sampled_from([".outputs", ".inputs", ".outputs.t", ""])
    ref = st.builds(lambda t, s: t + (s or ".outputs"), st.sampled_from(targets), suffixes)
    steps = {}
    for n in names:
        inputs = draw(st.lists(ref, max_size=3))
        if draw(st.integers(0, 9)):  # mostly keep inputs to existing steps, so the cycle check runs
            inputs = [r for r in inputs if not r.startswith("zz.")]
        steps[n] = Step(n, inputs=inputs, triggers=draw(st.lists(ref, max_size=2)))
    return PipelineVersion("p", 1, "u", steps, allow_cycles=draw(st.booleans()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines())
def test_same_verdict_as_the_recursive_walk(pv):
    assert _outcome(validation.validate, pv) == _outcome(_old_validate, pv)
    assert _outcome(validation._check_cycles, pv) == _outcome(_old_check_cycles, pv)
