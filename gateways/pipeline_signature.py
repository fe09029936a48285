"""A pipeline's tensor metadata (KServe v2 ``inputs`` / ``outputs``), from its steps' models.

A pipeline has no signature of its own: it takes what its first steps' models take and answers
what its output steps give. So its inputs are the inputs of the models of the steps fed only by the
pipeline's inputs (named as the caller sends them, i.e. through the step's tensorMap), and its
outputs are the tensors its ``output`` selects from the output steps' models (renamed by the
output's tensorMap). When a model's metadata is not known, or a step mixes the pipeline's inputs
with other steps' outputs, the side it concerns is left empty rather than half right.

Pure: ``signature`` takes the pipeline spec (``scheduler_pb2.Pipeline`` as the scheduler announces
it, references normalised to ``step.outputs[.tensor]`` / ``<pipeline>.inputs[.tensor]``) and the
models' metadata already fetched (``gateways.model_metadata``).
"""
from __future__ import annotations

from collections.abc import Mapping

Tensor = dict  # {"name": str, "datatype": str, "shape": [int]}


def first_and_last_models(pipeline) -> set[str]:
    """The models whose metadata ``signature`` needs."""
    return {s.name for s in _input_steps(pipeline)} | {r.split(".")[0] for r in _output_refs(pipeline)}


def _is_pipeline_input(pipeline, ref: str) -> bool:
    return ref.split(".")[:2] == [pipeline.name, "inputs"]


def _input_steps(pipeline) -> list:
    """Steps fed by the pipeline's inputs alone (no inputs given: the pipeline's inputs)."""
    return [s for s in pipeline.steps if all(_is_pipeline_input(pipeline, r) for r in s.inputs)]


def _output_refs(pipeline) -> list[str]:
    if pipeline.HasField("output") and pipeline.output.steps:
        return list(pipeline.output.steps)
    return [f"{pipeline.steps[-1].name}.outputs"] if pipeline.steps else []


def signature(pipeline, metadata: Mapping[str, dict | None]) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, outputs) of ``pipeline``; ``metadata``: model name -> its KServe metadata or None."""
    return _inputs(pipeline, metadata), _outputs(pipeline, metadata)


def _inputs(pipeline, metadata) -> list[Tensor]:
    steps = _input_steps(pipeline)
    mixed = [s for s in pipeline.steps if s not in steps and any(_is_pipeline_input(pipeline, r) for r in s.inputs)]
    if not steps or mixed:
        return []
    out: dict[str, Tensor] = {}
    for s in steps:
        meta = metadata.get(s.name)
        if meta is None:
            return []
        # tensorMap: "<pipeline>.inputs.<caller's name>" -> the model's input name
        caller_name = {v: k.split(".", 2)[2] for k, v in s.tensorMap.items()
                       if _is_pipeline_input(pipeline, k) and k.count(".") >= 2}
        selected = {r.split(".", 2)[2] for r in s.inputs if r.count(".") >= 2}
        for t in meta.get("inputs", []):
            name = caller_name.get(t.get("name"), t.get("name"))
            if selected and name not in selected:
                continue
            out.setdefault(name, {**t, "name": name})
    return list(out.values())


def _outputs(pipeline, metadata) -> list[Tensor]:
    renames = dict(pipeline.output.tensorMap) if pipeline.HasField("output") else {}
    out: dict[str, Tensor] = {}
    for ref in _output_refs(pipeline):
        parts = ref.split(".")
        model, side = parts[0], parts[1] if len(parts) > 1 else "outputs"
        meta = metadata.get(model)
        if meta is None or side not in ("inputs", "outputs"):
            return []
        for t in meta.get(side, []):
            if len(parts) > 2 and t.get("name") != parts[2]:
                continue
            name = renames.get(f"{model}.{side}.{t.get('name')}", t.get("name"))
            out.setdefault(name, {**t, "name": name})
    return list(out.values())
