"""Seldon resource YAML (``mlops.seldon.io/v1alpha1`` Pipeline / Model) -> scheduler protos.

Strict like the seldon CLI: an unknown field is an error naming the field and where it was
(``error-bad-spec.yaml`` writes ``input`` instead of ``inputs`` on a step and must be refused).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import yaml

from chainer_api import scheduler_pb2
from scheduler_min.validation import PipelineValidationError

API_VERSION = "mlops.seldon.io/v1alpha1"
JOIN_TYPES = {"inner": 0, "outer": 1, "any": 2}


class ManifestError(PipelineValidationError):
    """The YAML itself is malformed: wrong kind, unknown field, wrong type."""


def load_documents(text: str, source: str = "<input>") -> list[dict]:
    """All non-empty YAML documents in ``text``; each must be a mapping."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: malformed YAML: {' '.join(str(exc).split())}") from exc
    for n, d in enumerate(docs):
        if not isinstance(d, dict):
            raise ManifestError(f"{source}: document {n + 1} is a {type(d).__name__}, expected a mapping")
    return docs


def _where(path: str, name: str | None) -> str:
    return f"{path} of {name}" if name else path


def _check_keys(obj: Any, allowed: Iterable[str], path: str, name: str | None) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ManifestError(f"{_where(path, name)} must be a mapping, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise ManifestError(f'unknown field "{unknown[0]}" in {_where(path, name)}')
    return obj


def _str_list(value: Any, path: str, name: str | None) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{_where(path, name)} must be a list of strings")
    out = []
    for v in value:
        if v is None:
            out.append("")  # a bare "-" item: kept so validation reports the empty reference
        elif isinstance(v, (str, int, float)) and not isinstance(v, bool):
            out.append(str(v))
        else:
            raise ManifestError(f"{_where(path, name)} must be a list of strings, found {v!r}")
    return out


def _str_map(value: Any, path: str, name: str | None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(f"{_where(path, name)} must be a mapping of strings")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _uint(value: Any, path: str, name: str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 0xFFFFFFFF:
        raise ManifestError(f"{_where(path, name)} must be a non-negative integer, got {value!r}")
    return value


def _bool(value: Any, path: str, name: str | None) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ManifestError(f"{_where(path, name)} must be true or false, got {value!r}")
    return value


def _join(value: Any, path: str, name: str | None) -> int:
    if value is None:
        return 0
    key = str(value).lower()
    if key not in JOIN_TYPES:
        raise ManifestError(f"{_where(path, name)} must be one of inner, outer, any; got {value!r}")
    return JOIN_TYPES[key]


def _metadata(doc: dict, kind: str) -> tuple[str, dict]:
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise ManifestError(f"{kind} has no metadata.name")
    name = meta["name"]
    if not isinstance(name, str):
        raise ManifestError(f"{kind} metadata.name must be a string, got {name!r}")
    return name, meta


def _check_header(doc: dict, kind: str) -> None:
    if doc.get("kind") != kind:
        raise ManifestError(f"expected kind {kind}, got {doc.get('kind')!r}")
    api = doc.get("apiVersion")
    if api is not None and api != API_VERSION:
        raise ManifestError(f"{kind} apiVersion must be {API_VERSION}, got {api!r}")
    _check_keys(doc, ("apiVersion", "kind", "metadata", "spec", "status"), "the document", None)


STEP_KEYS = ("name", "inputs", "joinWindowMs", "tensorMap", "triggers", "inputsJoinType",
             "triggersJoinType", "batch")
INPUT_KEYS = ("externalInputs", "externalTriggers", "joinWindowMs", "joinType", "triggersJoinType", "tensorMap")
OUTPUT_KEYS = ("steps", "joinWindowMs", "stepsJoin", "tensorMap")
SPEC_KEYS = ("input", "steps", "output", "dataflow", "allowCycles", "maxStepRevisits")


def pipeline_from_manifest(doc: dict) -> scheduler_pb2.Pipeline:
    """A ``kind: Pipeline`` document (camelCase keys as users write them) -> ``scheduler_pb2.Pipeline``."""
    _check_header(doc, "Pipeline")
    name, meta = _metadata(doc, "Pipeline")
    spec = _check_keys(doc.get("spec"), SPEC_KEYS, "spec", name)
    p = scheduler_pb2.Pipeline(name=name)
    steps = spec.get("steps")
    if steps is not None and not isinstance(steps, list):
        raise ManifestError(f"spec.steps of {name} must be a list")
    for n, raw in enumerate(steps or []):
        path = f"spec.steps[{n}]"
        s = _check_keys(raw, STEP_KEYS, path, name)
        if not s.get("name") or not isinstance(s.get("name"), str):
            raise ManifestError(f"{_where(path, name)} has no name")
        step = p.steps.add(name=s["name"], inputs=_str_list(s.get("inputs"), f"{path}.inputs", name),
                           triggers=_str_list(s.get("triggers"), f"{path}.triggers", name),
                           inputsJoin=_join(s.get("inputsJoinType"), f"{path}.inputsJoinType", name),
                           triggersJoin=_join(s.get("triggersJoinType"), f"{path}.triggersJoinType", name))
        step.tensorMap.update(_str_map(s.get("tensorMap"), f"{path}.tensorMap", name))
        jw = _uint(s.get("joinWindowMs"), f"{path}.joinWindowMs", name)
        if jw is not None:
            step.joinWindowMs = jw
        if "batch" in s and s["batch"] is not None:
            b = _check_keys(s["batch"], ("size", "windowMs", "rolling"), f"{path}.batch", name)
            step.batch.SetInParent()
            size = _uint(b.get("size"), f"{path}.batch.size", name)
            window = _uint(b.get("windowMs"), f"{path}.batch.windowMs", name)
            _bool(b.get("rolling"), f"{path}.batch.rolling", name)  # accepted, never sent (as the reference)
            if size is not None:
                step.batch.size = size
            if window is not None:
                step.batch.windowMs = window
    if spec.get("input") is not None:
        i = _check_keys(spec["input"], INPUT_KEYS, "spec.input", name)
        p.input.SetInParent()
        p.input.externalInputs.extend(_str_list(i.get("externalInputs"), "spec.input.externalInputs", name))
        p.input.externalTriggers.extend(_str_list(i.get("externalTriggers"), "spec.input.externalTriggers", name))
        p.input.joinType = _join(i.get("joinType"), "spec.input.joinType", name)
        p.input.triggersJoin = _join(i.get("triggersJoinType"), "spec.input.triggersJoinType", name)
        p.input.tensorMap.update(_str_map(i.get("tensorMap"), "spec.input.tensorMap", name))
        jw = _uint(i.get("joinWindowMs"), "spec.input.joinWindowMs", name)
        if jw is not None:
            p.input.joinWindowMs = jw
    if spec.get("output") is not None:
        o = _check_keys(spec["output"], OUTPUT_KEYS, "spec.output", name)
        p.output.SetInParent()
        p.output.steps.extend(_str_list(o.get("steps"), "spec.output.steps", name))
        p.output.joinWindowMs = _uint(o.get("joinWindowMs"), "spec.output.joinWindowMs", name) or 0
        p.output.stepsJoin = _join(o.get("stepsJoin"), "spec.output.stepsJoin", name)
        p.output.tensorMap.update(_str_map(o.get("tensorMap"), "spec.output.tensorMap", name))
    if spec.get("dataflow") is not None:
        d = _check_keys(spec["dataflow"], ("cleanTopicsOnDelete",), "spec.dataflow", name)
        p.dataflowSpec.cleanTopicsOnDelete = _bool(d.get("cleanTopicsOnDelete"), "spec.dataflow.cleanTopicsOnDelete", name)
        p.dataflowSpec.SetInParent()
    p.allowCycles = _bool(spec.get("allowCycles"), "spec.allowCycles", name)
    p.maxStepRevisits = _uint(spec.get("maxStepRevisits"), "spec.maxStepRevisits", name) or 0
    p.kubernetesMeta.namespace = str(meta.get("namespace") or "")
    p.kubernetesMeta.generation = int(meta.get("generation") or 0)
    return p


def _from_yaml(text: str, source: str, convert) -> list:
    docs = load_documents(text, source)
    if not docs:
        raise ManifestError(f"{source}: no YAML documents found")
    return [convert(d) for d in docs]


def pipelines_from_yaml(text: str, source: str = "<input>") -> list[scheduler_pb2.Pipeline]:
    """Every ``kind: Pipeline`` document of a (multi-document) YAML text."""
    return _from_yaml(text, source, pipeline_from_manifest)


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------

MODEL_SPEC_KEYS = ("storageUri", "artifactVersion", "schemaUri", "secretName", "requirements", "memory",
                   "replicas", "minReplicas", "maxReplicas", "server", "preloaded", "dedicated", "logger",
                   "parameters", "explainer", "llm", "modelRuntimeInfo", "endpoint")
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20,
          "Gi": 2**30, "Ti": 2**40}


def _memory_bytes(value: Any, name: str) -> int:
    m = _QUANTITY.match(str(value).strip())
    if not m or m.group(2) not in _UNITS:
        raise ManifestError(f"spec.memory of {name} is not a quantity like 100Ki or 1Gi: {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def model_from_manifest(doc: dict) -> scheduler_pb2.Model:
    """A ``kind: Model`` document -> ``scheduler_pb2.Model``.

    Our extension for the serving endpoint: ``spec.endpoint`` (or a parameter named ``endpoint``,
    or a ``grpc://`` / ``http://`` ``storageUri``); see ``scheduler_min.models.model_endpoint``.
    """
    from scheduler_min.models import ENDPOINT_PARAMETER

    _check_header(doc, "Model")
    name, meta = _metadata(doc, "Model")
    spec = _check_keys(doc.get("spec"), MODEL_SPEC_KEYS, "spec", name)
    m = scheduler_pb2.Model()
    m.meta.name = name
    m.meta.kubernetesMeta.namespace = str(meta.get("namespace") or "")
    m.meta.kubernetesMeta.generation = int(meta.get("generation") or 0)
    ms = m.modelSpec
    ms.uri = str(spec.get("storageUri") or "")
    ms.SetInParent()
    av = _uint(spec.get("artifactVersion"), "spec.artifactVersion", name)
    if av is not None:
        ms.artifactVersion = av
    ms.requirements.extend(_str_list(spec.get("requirements"), "spec.requirements", name))
    if spec.get("memory") is not None:
        ms.memoryBytes = _memory_bytes(spec["memory"], name)
    if spec.get("server"):
        ms.server = str(spec["server"])
    params = spec.get("parameters") or []
    if not isinstance(params, list):
        raise ManifestError(f"spec.parameters of {name} must be a list of {{name, value}}")
    for n, p in enumerate(params):
        p = _check_keys(p, ("name", "value"), f"spec.parameters[{n}]", name)
        ms.parameters.add(name=str(p.get("name") or ""), value=str(p.get("value") or ""))
    if spec.get("endpoint"):
        ms.parameters.add(name=ENDPOINT_PARAMETER, value=str(spec["endpoint"]))
    m.deploymentSpec.replicas = _uint(spec.get("replicas"), "spec.replicas", name) or 1
    m.deploymentSpec.minReplicas = _uint(spec.get("minReplicas"), "spec.minReplicas", name) or 0
    m.deploymentSpec.maxReplicas = _uint(spec.get("maxReplicas"), "spec.maxReplicas", name) or 0
    return m


def models_from_yaml(text: str, source: str = "<input>") -> list[scheduler_pb2.Model]:
    """Every ``kind: Model`` document of a (multi-document) YAML text."""
    return _from_yaml(text, source, model_from_manifest)
