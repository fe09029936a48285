"""Pipeline validation rules, in the reference's order and with its error texts.

Runs on a *normalised* pipeline (references already expanded, see ``convert.normalise_refs``).
Every failure is a ``PipelineValidationError`` whose message is the text users of Seldon know.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from dataflow.kafka import TopicNamer
    from scheduler_min.pipeline_version import PipelineVersion

SEP = "."
INPUTS = "inputs"
OUTPUTS = "outputs"
STEP = "step"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

INPUT_EMPTY = "At least one pipeline input must be specified"
INPUT_NAME_EMPTY = "Input name must not be empty"
INPUT_ONLY_PIPELINE = "A Pipeline name must also specify one of inputs, outputs or a step name"
INPUT_BAD_PREFIX = ("A Pipeline inputs referencing another pipeline must be "
                    "<pipeineName>.(inputs|outputs|step.<stepName>)")
INPUT_STEP_BAD_SUFFIX = "A pipeline step must be <pipelineName>.step.<stepName>.(inputs|outputs)"
INPUT_TOO_LONG = ("The input is too long. It must be <pipelineName>.(inputs|outputs).(tensorName)? or "
                  "<pipelineName>.step.<stepName>.<inputs|outputs>.<tensorName>")


class PipelineValidationError(ValueError):
    """A pipeline definition the scheduler refuses; the message says what and where."""


def is_valid_name(name: str) -> bool:
    """Pipeline / model names: DNS-label like, no dots."""
    return bool(_NAME_RE.match(name)) and "." not in name


def step_of(ref: str) -> str:
    return ref.split(SEP)[0]


def validate(pv: PipelineVersion) -> None:
    for check in (_check_name, _check_steps_exist, _check_step_name_not_pipeline, _check_step_inputs,
                  _check_step_triggers, _check_references_exist, _check_outputs, _check_cycles,
                  _check_inputs_and_triggers_differ, _check_pipeline_input, _check_batch):
        check(pv)


def _check_name(pv) -> None:
    if not is_valid_name(pv.name):
        raise PipelineValidationError(
            f"pipeline {pv.name} does not have a valid name - it must be alphanmumeric and cannot contain dots (.)")


def _check_steps_exist(pv) -> None:
    if not pv.steps:
        raise PipelineValidationError(f"pipeline {pv.name} has no steps defined")


def _check_step_name_not_pipeline(pv) -> None:
    if pv.name in pv.steps:
        raise PipelineValidationError(
            f"pipeline {pv.name} must not have a step name with the same name as pipeline name")


def _check_refs(pv, step_name: str, refs: list[str], trigger: bool) -> None:
    kind = "trigger" if trigger else "input"
    for ref in refs:
        if ref.strip() == "" or ref.startswith(SEP):
            raise PipelineValidationError(f"pipeline {pv.name} step {step_name} has an empty {kind}")
        parts = ref.split(SEP)
        if len(parts) not in (2, 3) or parts[1] not in (INPUTS, OUTPUTS):
            raise PipelineValidationError(
                f"pipeline step {kind} invalid pipeline {pv.name} step {step_name} input step {ref}.")


def _check_step_inputs(pv) -> None:
    for step in pv.steps.values():
        _check_refs(pv, step.name, step.inputs, trigger=False)


def _check_step_triggers(pv) -> None:
    for step in pv.steps.values():
        _check_refs(pv, step.name, step.triggers, trigger=True)


def _check_references_exist(pv) -> None:
    for step in pv.steps.values():
        for ref in step.inputs:
            name = step_of(ref)
            if name not in pv.steps and name != pv.name:
                raise PipelineValidationError(
                    f"pipeline {pv.name} step {step.name} has input {name} for step that does not exist")
    if pv.output is not None:
        for ref in pv.output.steps:
            name = step_of(ref)
            if name not in pv.steps:
                raise PipelineValidationError(f"pipeline {pv.name} output step {name} not found")


def _check_outputs(pv) -> None:
    if pv.output is None:
        return
    for ref in pv.output.steps:
        parts = ref.split(SEP)
        if len(parts) not in (2, 3) or parts[1] not in (INPUTS, OUTPUTS):
            raise PipelineValidationError(f"pipeline {pv.name} output specifier {ref} invalid")


def _upstream(pv, step) -> list[str]:
    seen: dict[str, None] = {}
    for ref in list(step.inputs) + list(step.triggers):
        name = step_of(ref)
        if name != pv.name:
            seen[name] = None
    return list(seen)


_ON_PATH, _DONE = 1, 2


def _check_cycles(pv) -> None:
    """Depth-first search over inputs and triggers; a step met again on the current path is a cycle.

    Iterative with three colours (unvisited / on the current path / done), so every step and every
    edge is walked once: linear in the pipeline's size and no recursion limit on long chains.
    """
    if pv.allow_cycles:
        return
    steps = pv.steps
    # triggers are not existence-checked; unknown names (and the pipeline itself) have no upstream
    upstream = {name: [up for up in _upstream(pv, step) if up in steps] for name, step in steps.items()}
    state: dict[str, int] = {}
    for root in steps:
        if root in state:
            continue
        state[root] = _ON_PATH
        stack = [(root, iter(upstream[root]))]
        while stack:
            name, ups = stack[-1]
            for up in ups:
                seen = state.get(up)
                if seen == _ON_PATH:
                    raise PipelineValidationError(f"pipeline {pv.name} has a cycle")
                if seen is None:
                    state[up] = _ON_PATH
                    stack.append((up, iter(upstream[up])))
                    break
            else:
                state[name] = _DONE
                stack.pop()


def _check_inputs_and_triggers_differ(pv) -> None:
    for step in pv.steps.values():
        inputs = {step_of(ref) for ref in step.inputs}
        for trig in step.triggers:
            if trig in inputs:
                raise PipelineValidationError(
                    f"pipeline {pv.name} : inputs and triggers must differ, but found {trig} in both")


def _check_pipeline_input(pv) -> None:
    if pv.input is None:
        return
    if not pv.input.external_inputs:
        raise PipelineValidationError(f"pipeline {pv.name} input  is invalid. {INPUT_EMPTY}")
    for ref in pv.input.external_inputs:
        reason = _external_ref_problem(ref)
        if reason:
            raise PipelineValidationError(f"pipeline {pv.name} input {ref} is invalid. {reason}")


def _external_ref_problem(ref: str) -> str | None:
    if ref.strip() == "":
        return INPUT_NAME_EMPTY
    parts = ref.split(SEP)
    io = (INPUTS, OUTPUTS)
    if len(parts) == 1:
        return INPUT_ONLY_PIPELINE
    if len(parts) == 2:
        return None if parts[1] in io else INPUT_BAD_PREFIX
    if len(parts) == 3:
        if parts[1] not in io + (STEP,):
            return INPUT_BAD_PREFIX
        return INPUT_STEP_BAD_SUFFIX if parts[1] == STEP else None
    if parts[1] not in io + (STEP,):
        return INPUT_BAD_PREFIX
    if parts[3] not in io:
        return INPUT_STEP_BAD_SUFFIX
    if parts[1] in io:
        return INPUT_BAD_PREFIX
    if len(parts) > 5:
        return INPUT_TOO_LONG
    return None


def _check_batch(pv) -> None:
    """A rolling batch slides over the last ``size`` rows; without a size it has no width, and the
    engine would refuse the pipeline after the scheduler had accepted it."""
    for step in pv.steps.values():
        if step.batch_rolling and not step.batch_size:
            raise PipelineValidationError(f"pipeline {pv.name} step {step.name}: batch.rolling needs batch.size")


def _abbrev(name: str) -> str:
    return name if len(name) <= 40 else f"{name[:32]}...({len(name)} characters)"


def check_topic_names(namer: TopicNamer, *, pipeline: str | None = None, steps=(),
                      model: str | None = None) -> None:
    """Refuse names whose Kafka topics would pass Kafka's length limit under ``namer``'s prefix
    and namespace: such a pipeline would be accepted and then fail in every engine (or, for a
    model, in the model gateway) when the topic is created. Steps are named after model topics."""
    if pipeline is not None:
        why = namer.name_too_long("pipeline", pipeline)
        if why:
            raise PipelineValidationError(f"pipeline name {_abbrev(pipeline)} is too long: {why}")
    for step in steps:
        why = namer.name_too_long("model", step)
        if why:
            raise PipelineValidationError(
                f"pipeline {_abbrev(pipeline or '')} step name {_abbrev(step)} is too long: {why}")
    if model is not None:
        why = namer.name_too_long("model", model)
        if why:
            raise PipelineValidationError(f"model name {_abbrev(model)} is too long: {why}")
