"""Every validation rule with the reference's message, incl. the repository's error-*.yaml samples."""
import pytest

from scheduler_min import convert
from scheduler_min.manifest import ManifestError
from scheduler_min.validation import PipelineValidationError


def check(text):
    return convert.from_proto(convert.pipelines_from_yaml(text)[0])


def fails(text):
    with pytest.raises(PipelineValidationError) as info:
        check(text)
    return str(info.value)


ERROR_BAD_SPEC = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: tfsimple-conditional
spec:
  steps:
  - name: conditional
  - name: mul10
    input:
    - conditional.outputs.OUTPUT0
    tensorMap:
      conditional.outputs.OUTPUT0: INPUT
  output:
    steps:
    - mul10
"""

ERROR_EMPTY_INPUT = """
kind: Pipeline
metadata:
  name: iris-pipeline
spec:
  steps:
    - name: first
    - name: second
      inputs:
        -
  output:
    steps:
    - iris
"""

ERROR_EMPTY_TRIGGER = """
kind: Pipeline
metadata:
  name: iris-pipeline
spec:
  steps:
    - name: first
    - name: second
    - name: third
      inputs:
        - first
      triggers:
        -
  output:
    steps:
    - iris
"""

ERROR_STEP_NAME = """
kind: Pipeline
metadata:
  name: iris
spec:
  steps:
    - name: iris
  output:
    steps:
    - iris
"""


def test_error_bad_spec_unknown_field():
    with pytest.raises(ManifestError) as info:
        check(ERROR_BAD_SPEC)
    assert str(info.value) == 'unknown field "input" in spec.steps[1] of tfsimple-conditional'


def test_error_empty_input():
    assert fails(ERROR_EMPTY_INPUT) == "pipeline iris-pipeline step second has an empty input"


def test_error_empty_trigger():
    assert fails(ERROR_EMPTY_TRIGGER) == "pipeline iris-pipeline step third has an empty trigger"


def test_error_step_name():
    assert fails(ERROR_STEP_NAME) == "pipeline iris must not have a step name with the same name as pipeline name"


def pipeline(name="p", steps="    - name: a\n", extra=""):
    return f"kind: Pipeline\nmetadata:\n  name: {name}\nspec:\n  steps:\n{steps}{extra}"


@pytest.mark.parametrize("name", ["Bad", "a.b", "a_b", "-a", "a-"])
def test_name(name):
    assert fails(pipeline(name=f'"{name}"')) == (
        f"pipeline {name} does not have a valid name - it must be alphanmumeric and cannot contain dots (.)")


def test_no_steps():
    assert fails("kind: Pipeline\nmetadata: {name: p}\nspec:\n  steps: []\n") == "pipeline p has no steps defined"


def test_repeated_step():
    assert fails(pipeline(steps="    - name: a\n    - name: a\n")) == "pipeline p has repeated step a"


@pytest.mark.parametrize("ref", ["a.foo", "a.outputs.b.c", "a.inputs.x.y"])
def test_bad_input_specifier(ref):
    steps = f"    - name: a\n    - name: b\n      inputs: [{ref}]\n"
    assert fails(pipeline(steps=steps)) == f"pipeline step input invalid pipeline p step b input step {ref}."


def test_bad_trigger_specifier():
    steps = "    - name: a\n    - name: b\n      triggers: [a.bad]\n"
    assert fails(pipeline(steps=steps)) == "pipeline step trigger invalid pipeline p step b input step a.bad."


def test_input_for_missing_step():
    steps = "    - name: a\n      inputs: [nope.outputs]\n"
    assert fails(pipeline(steps=steps)) == "pipeline p step a has input nope for step that does not exist"


def test_trigger_to_missing_step_is_allowed():
    steps = "    - name: a\n      triggers: [nope.outputs]\n"
    assert check(pipeline(steps=steps)).steps["a"].triggers == ["nope.outputs"]


def test_output_step_not_found():
    assert fails(pipeline(extra="  output:\n    steps: [zz]\n")) == "pipeline p output step zz not found"


def test_output_cannot_be_the_pipeline():
    assert fails(pipeline(extra="  output:\n    steps: [p.inputs]\n")) == "pipeline p output step p not found"


def test_output_specifier_invalid():
    assert fails(pipeline(extra="  output:\n    steps: [a.foo]\n")) == "pipeline p output specifier a.foo invalid"


def test_cycle_rejected_unless_allowed():
    steps = "    - name: a\n      inputs: [b]\n    - name: b\n      inputs: [a]\n"
    assert fails(pipeline(steps=steps)) == "pipeline p has a cycle"
    assert check(pipeline(steps=steps, extra="  allowCycles: true\n")).allow_cycles


def test_cycle_through_triggers():
    steps = "    - name: a\n      triggers: [b]\n    - name: b\n      inputs: [a]\n"
    assert fails(pipeline(steps=steps)) == "pipeline p has a cycle"


def test_diamond_is_not_a_cycle():
    steps = ("    - name: a\n    - name: b\n      inputs: [a]\n    - name: c\n      inputs: [a]\n"
             "    - name: d\n      inputs: [b, c]\n")
    assert set(check(pipeline(steps=steps)).steps) == {"a", "b", "c", "d"}


def test_inputs_and_triggers_differ():
    # triggers are compared as written after normalisation (the reference compares the full
    # trigger reference against input step names, so only a bare-name match would collide)
    steps = "    - name: a\n    - name: b\n      inputs: [a.outputs.x]\n      triggers: [a.outputs]\n"
    assert check(pipeline(steps=steps))


@pytest.mark.parametrize("ref,reason", [
    ("q.foo", "A Pipeline inputs referencing another pipeline must be <pipeineName>.(inputs|outputs|step.<stepName>)"),
    ("q.foo.x", "A Pipeline inputs referencing another pipeline must be "
                "<pipeineName>.(inputs|outputs|step.<stepName>)"),
    ("q.step.s.bad", "A pipeline step must be <pipelineName>.step.<stepName>.(inputs|outputs)"),
    ("q.outputs.s.inputs", "A Pipeline inputs referencing another pipeline must be "
                           "<pipeineName>.(inputs|outputs|step.<stepName>)"),
    ("q.step.s.outputs.t.u", "The input is too long. It must be <pipelineName>.(inputs|outputs).(tensorName)? or "
                             "<pipelineName>.step.<stepName>.<inputs|outputs>.<tensorName>"),
    ("' '", "Input name must not be empty"),
])
def test_external_input_rules(ref, reason):
    shown = " " if ref == "' '" else ref
    assert fails(pipeline(extra=f"  input:\n    externalInputs: [{ref}]\n")) == (
        f"pipeline p input {shown} is invalid. {reason}")


def test_input_without_external_inputs():
    assert fails(pipeline(extra="  input:\n    joinWindowMs: 5\n")) == (
        "pipeline p input  is invalid. At least one pipeline input must be specified")


@pytest.mark.parametrize("ref", ["q", "q.inputs", "q.outputs.T", "q.step.s", "q.step.s.inputs.T"])
def test_valid_external_inputs(ref):
    assert check(pipeline(extra=f"  input:\n    externalInputs: [{ref}]\n")).input is not None


@pytest.mark.parametrize("text,msg", [
    ("kind: Model\nmetadata: {name: p}\n", "expected kind Pipeline, got 'Model'"),
    ("kind: Pipeline\nspec: {}\n", "Pipeline has no metadata.name"),
    ("kind: Pipeline\nmetadata: {name: p}\nspec:\n  steps: [{name: a, joinWindowMs: -1}]\n",
     "spec.steps[0].joinWindowMs of p must be a non-negative integer, got -1"),
    ("kind: Pipeline\nmetadata: {name: p}\nspec:\n  steps: [{name: a, inputsJoinType: sideways}]\n",
     "spec.steps[0].inputsJoinType of p must be one of inner, outer, any; got 'sideways'"),
    ("kind: Pipeline\nmetadata: {name: p}\nspec:\n  stepz: []\n", 'unknown field "stepz" in spec of p'),
])
def test_manifest_errors(text, msg):
    with pytest.raises(ManifestError) as info:
        check(text)
    assert str(info.value) == msg


def test_malformed_yaml():
    with pytest.raises(ManifestError) as info:
        convert.pipelines_from_yaml("kind: [", source="x.yaml")
    assert str(info.value).startswith("x.yaml: malformed YAML")


def test_trigger_on_pipeline_input_tensor_with_input_from_same_pipeline_is_valid():
    steps = ("    - name: mul10\n      inputs: [p.inputs.INPUT]\n      triggers: [p.inputs.ok1, p.inputs.ok2]\n"
             "      triggersJoinType: any\n")
    assert check(pipeline(steps=steps)).steps["mul10"].triggers_join == 2
