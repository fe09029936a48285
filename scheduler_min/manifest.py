"""Seldon resource YAML (``mlops.seldon.io/v1alpha1`` Pipeline / Model) -> scheduler protos.

Strict like the seldon CLI: an unknown field is an error naming the field and where it was
(``error-bad-spec.yaml`` writes ``input`` instead of ``inputs`` on a step and must be refused).

The CLI, ``dataflow up`` and anything else reading manifests hands the raw bytes to this module,
so every way a file can be broken -- not text, UTF-16 without a byte-order mark, a duplicate key,
nesting deep enough to exhaust Python's stack -- ends in one ``ManifestError`` line naming the file
and the place, never in a traceback.
"""
from __future__ import annotations

import codecs
import re
import reprlib
from collections.abc import Iterable
from typing import Any, cast

import yaml

from chainer_api import scheduler_pb2
from dataflow.joins.types import JoinType
from scheduler_min.models import ENDPOINT_PARAMETER
from scheduler_min.validation import PipelineValidationError

API_VERSION = "mlops.seldon.io/v1alpha1"
# Pipeline and Model manifests nest about six levels deep. The bound is far above any real
# manifest and far below Python's recursion limit, so a hostile file (20,000 nested "[") is
# refused with one line instead of a RecursionError from the composer's recursion.
MAX_NESTING_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SURROGATE = re.compile("[\ud800-\udfff]")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlevel, _short.maxlist, _short.maxdict = 2, 4, 4


class ManifestError(PipelineValidationError):
    """The YAML itself is malformed: wrong kind, unknown field, wrong type."""


def one_line(text: str) -> str:
    """``text`` with line breaks escaped: every manifest error is printed as one ``Error:`` line,
    even when it quotes a name or key that holds a newline."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _show(value: Any) -> str:
    """A bounded repr for error messages (a value can be a huge list built from YAML aliases)."""
    text = one_line(_short.repr(value))
    return text if len(text) <= 100 else text[:97] + "..."


def decode_manifest(data: bytes, source: str = "<input>") -> str:
    """Manifest bytes -> text. UTF-8 (optionally with a BOM), or UTF-16/UTF-32 *with* a byte-order
    mark, which YAML allows and kubectl reads. Anything else -- a binary file, UTF-16 without a BOM
    (its ASCII half decodes as UTF-8 full of NUL bytes) -- is a ``ManifestError`` naming the file."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        what = "UTF-8" if encoding == "utf-8" else f"{encoding.upper()} (as its byte-order mark says)"
        raise ManifestError(f"{source}: not {what} text: undecodable byte 0x{data[exc.start]:02x} at offset "
                            f"{exc.start} (a binary file? save the manifest as UTF-8)") from None
    if "\0" in text:
        raise ManifestError(f"{source}: not a YAML text file: it contains NUL bytes (a binary file, or "
                            f"UTF-16/UTF-32 without a byte-order mark? save the manifest as UTF-8)")
    return text


def _mark(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _ManifestLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate mapping keys and bounds nesting depth.

    PyYAML keeps the last of two equal keys without a word, so a mistyped second ``inputs:`` would
    silently replace the first; refusing the file is safer than guessing which was meant. The depth
    is checked as each node is composed, before recursing into it, so the bound holds however deep
    the text is.
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._path: list[str] = []  # where the node being composed is, e.g. ["spec", "steps", "[0]"]

    def compose_node(self, parent, index):
        if len(self._path) >= MAX_NESTING_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_NESTING_DEPTH} levels deep", self.peek_event().start_mark)
        if isinstance(index, int):
            self._path.append(f"[{index}]")
        elif isinstance(index, yaml.ScalarNode):
            self._path.append(str(index.value))
        else:
            self._path.append("")  # the document root, or a mapping key
        try:
            node = super().compose_node(parent, index)
            assert node is not None  # PyYAML's compose_node returns a node or raises; the stub says Optional
            if isinstance(node, yaml.ScalarNode) and _SURROGATE.search(node.value):
                # "\ud800" escapes decode to lone surrogates, which no UTF-8 field can hold
                raise yaml.composer.ComposerError(
                    None, None, "escape of a lone UTF-16 surrogate (\\ud800-\\udfff) is not a character",
                    node.start_mark)
            if not hasattr(node, "manifest_path"):  # an alias keeps the path of its anchor
                where = "".join(p if p.startswith("[") or not i else f".{p}"
                                for i, p in enumerate(q for q in self._path if q))
                node.manifest_path = where  # type: ignore[attr-defined]  # our own tag on PyYAML's nodes
            return node
        finally:
            self._path.pop()

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # "<<: *base" keys may be overridden by explicit ones
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # unhashable: the base class reports it
                if first is not key_node:
                    where = getattr(node, "manifest_path", "") or "the top level"
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_show(key)} in {where} (first at {_mark(first.start_mark)})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {exc.position + 1}: unacceptable character #x{exc.character:04x}" \
            if isinstance(exc.character, int) else f"character {exc.position + 1}: {exc.reason}"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        context = f" ({exc.context})" if exc.context else ""
        return f"{_mark(exc.problem_mark)}: {exc.problem}{context}"
    return " ".join(str(exc).split())


def load_documents(text: str | bytes, source: str = "<input>") -> list[dict]:
    """All non-empty YAML documents in ``text`` (bytes are decoded by ``decode_manifest``);
    each must be a mapping. Every failure is a one-line ``ManifestError`` naming ``source``."""
    if isinstance(text, (bytes, bytearray)):
        text = decode_manifest(bytes(text), source)
    elif "\0" in text:
        raise ManifestError(f"{source}: not a YAML text file: it contains NUL characters")
    try:
        docs = [d for d in yaml.load_all(text, Loader=_ManifestLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(one_line(f"{source}: malformed YAML at {_yaml_problem(exc)}")) from None
    except RecursionError:  # not reachable with the depth bound; kept so no traceback can escape
        raise ManifestError(f"{source}: malformed YAML: nested too deeply") from None
    for n, d in enumerate(docs):
        if not isinstance(d, dict):
            raise ManifestError(f"{source}: document {n + 1} is a {_kind_of(d)}, expected a mapping "
                                f"(apiVersion, kind, metadata, spec)")
    return docs


def _kind_of(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__)


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
            raise ManifestError(f"{_where(path, name)} must be a list of strings, found {_show(v)}")
    return out


def _str_map(value: Any, path: str, name: str | None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(f"{_where(path, name)} must be a mapping of strings")
    out = {}
    for k, v in value.items():
        if isinstance(k, (dict, list)) or isinstance(v, (dict, list)):
            raise ManifestError(f"{_where(path, name)} must map strings to strings, found {_show(k)}: {_show(v)}")
        out[str(k)] = "" if v is None else str(v)
    return out


def _str(value: Any, path: str, name: str | None) -> str:
    """A scalar as text ("" when absent); a mapping or list where a string belongs is an error."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise ManifestError(f"{_where(path, name)} must be a string, got a {_kind_of(value)}")
    return str(value)


def _uint(value: Any, path: str, name: str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 0xFFFFFFFF:
        raise ManifestError(f"{_where(path, name)} must be a non-negative integer, got {_show(value)}")
    return value


def _bool(value: Any, path: str, name: str | None) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ManifestError(f"{_where(path, name)} must be true or false, got {_show(value)}")
    return value


# The protobuf stubs give each message's join enum its own type; at run time all are plain ints, and
# ``_join`` returns the scheduler ``JoinOp`` value they share.
_InputJoin = scheduler_pb2.PipelineInput.JoinOp
_OutputJoin = scheduler_pb2.PipelineOutput.JoinOp


def _join(value: Any, path: str, name: str | None) -> int:
    if value is None:
        return JoinType.INNER.scheduler
    try:
        if not isinstance(value, str) or not value:
            raise ValueError(value)
        return JoinType.from_name(value).scheduler
    except ValueError:
        raise ManifestError(f"{_where(path, name)} must be one of inner, outer, any; got {_show(value)}") from None


def _metadata(doc: dict, kind: str) -> tuple[str, dict]:
    meta = doc.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ManifestError(f"{kind} metadata must be a mapping, got a {_kind_of(meta)}")
    if not meta or meta.get("name") in (None, ""):
        raise ManifestError(f"{kind} has no metadata.name")
    name = meta["name"]
    if not isinstance(name, str):
        raise ManifestError(f"{kind} metadata.name must be a string, got {_show(name)}")
    ns = meta.get("namespace")
    if ns is not None and not isinstance(ns, str):
        raise ManifestError(f"metadata.namespace of {name} must be a string, got {_show(ns)}")
    gen = meta.get("generation")
    if gen is not None and (isinstance(gen, bool) or not isinstance(gen, int) or not 0 <= gen < 2**63):
        raise ManifestError(f"metadata.generation of {name} must be a non-negative integer, got {_show(gen)}")
    return name, meta


def _check_header(doc: dict, kind: str) -> None:
    if doc.get("kind") != kind:
        raise ManifestError(f"expected kind {kind}, got {_show(doc.get('kind'))}")
    api = doc.get("apiVersion")
    if api is not None and api != API_VERSION:
        raise ManifestError(f"{kind} apiVersion must be {API_VERSION}, got {_show(api)}")
    _check_keys(doc, ("apiVersion", "kind", "metadata", "spec", "status"), "the document", None)


STEP_KEYS = ("name", "inputs", "joinWindowMs", "tensorMap", "triggers", "inputsJoinType",
             "triggersJoinType", "batch", "passEmptyResponses")
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
        step.passEmptyResponses = _bool(s.get("passEmptyResponses"), f"{path}.passEmptyResponses", name)
        if "batch" in s and s["batch"] is not None:
            b = _check_keys(s["batch"], ("size", "windowMs", "rolling"), f"{path}.batch", name)
            step.batch.SetInParent()
            size = _uint(b.get("size"), f"{path}.batch.size", name)
            window = _uint(b.get("windowMs"), f"{path}.batch.windowMs", name)
            step.batch.rolling = _bool(b.get("rolling"), f"{path}.batch.rolling", name)
            if size is not None:
                step.batch.size = size
            if window is not None:
                step.batch.windowMs = window
    if spec.get("input") is not None:
        i = _check_keys(spec["input"], INPUT_KEYS, "spec.input", name)
        p.input.SetInParent()
        p.input.externalInputs.extend(_str_list(i.get("externalInputs"), "spec.input.externalInputs", name))
        p.input.externalTriggers.extend(_str_list(i.get("externalTriggers"), "spec.input.externalTriggers", name))
        p.input.joinType = cast(_InputJoin, _join(i.get("joinType"), "spec.input.joinType", name))
        p.input.triggersJoin = cast(_InputJoin, _join(i.get("triggersJoinType"), "spec.input.triggersJoinType", name))
        p.input.tensorMap.update(_str_map(i.get("tensorMap"), "spec.input.tensorMap", name))
        jw = _uint(i.get("joinWindowMs"), "spec.input.joinWindowMs", name)
        if jw is not None:
            p.input.joinWindowMs = jw
    if spec.get("output") is not None:
        o = _check_keys(spec["output"], OUTPUT_KEYS, "spec.output", name)
        p.output.SetInParent()
        p.output.steps.extend(_str_list(o.get("steps"), "spec.output.steps", name))
        p.output.joinWindowMs = _uint(o.get("joinWindowMs"), "spec.output.joinWindowMs", name) or 0
        p.output.stepsJoin = cast(_OutputJoin, _join(o.get("stepsJoin"), "spec.output.stepsJoin", name))
        p.output.tensorMap.update(_str_map(o.get("tensorMap"), "spec.output.tensorMap", name))
    if spec.get("dataflow") is not None:
        d = _check_keys(spec["dataflow"], ("cleanTopicsOnDelete",), "spec.dataflow", name)
        p.dataflowSpec.cleanTopicsOnDelete = _bool(d.get("cleanTopicsOnDelete"), "spec.dataflow.cleanTopicsOnDelete",
                                                   name)
        p.dataflowSpec.SetInParent()
    p.allowCycles = _bool(spec.get("allowCycles"), "spec.allowCycles", name)
    p.maxStepRevisits = _uint(spec.get("maxStepRevisits"), "spec.maxStepRevisits", name) or 0
    p.kubernetesMeta.namespace = str(meta.get("namespace") or "")
    p.kubernetesMeta.generation = int(meta.get("generation") or 0)
    return p


def _from_yaml(text: str | bytes, source: str | None, convert) -> list:
    """``convert`` of every document. With a ``source`` (a file name), every error names it."""
    where = source or "<input>"
    docs = load_documents(text, where)
    if not docs:
        raise ManifestError(f"{where}: no YAML documents found (the file is empty or only comments)")
    out = []
    for n, doc in enumerate(docs):
        prefix = f"{source}: " if source else ""
        if source and len(docs) > 1:
            prefix = f"{source}: document {n + 1}: "
        try:
            out.append(convert(doc))
        except ManifestError as exc:
            raise ManifestError(one_line(prefix + str(exc))) from None
        except (ValueError, TypeError) as exc:
            # A value the protobuf message refuses (a lone surrogate from a "\ud800" escape, say).
            # Turned into a manifest error so a hostile file never ends in a traceback.
            raise ManifestError(one_line(f"{prefix}invalid value: {exc}")) from None
    return out


def pipelines_from_yaml(text: str | bytes, source: str | None = None) -> list[scheduler_pb2.Pipeline]:
    """Every ``kind: Pipeline`` document of a (multi-document) YAML text or file content."""
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
    m = _QUANTITY.match(str(value).strip()) if isinstance(value, (str, int, float)) else None
    try:
        amount = float(m.group(1)) * _UNITS[m.group(2)] if m else -1.0
    except (ValueError, KeyError):  # "1.2.3", unknown unit
        amount = -1.0
    if not 0 <= amount < 2**64:
        raise ManifestError(f"spec.memory of {name} is not a quantity like 100Ki or 1Gi: {_show(value)}")
    return int(amount)


def model_from_manifest(doc: dict) -> scheduler_pb2.Model:
    """A ``kind: Model`` document -> ``scheduler_pb2.Model``.

    Our extension for the serving endpoint: ``spec.endpoint`` (or a parameter named ``endpoint``,
    or a ``grpc://`` / ``http://`` ``storageUri``); see ``scheduler_min.models.model_endpoint``.
    """
    _check_header(doc, "Model")
    name, meta = _metadata(doc, "Model")
    spec = _check_keys(doc.get("spec"), MODEL_SPEC_KEYS, "spec", name)
    m = scheduler_pb2.Model()
    m.meta.name = name
    m.meta.kubernetesMeta.namespace = str(meta.get("namespace") or "")
    m.meta.kubernetesMeta.generation = int(meta.get("generation") or 0)
    ms = m.modelSpec
    ms.uri = _str(spec.get("storageUri"), "spec.storageUri", name)
    ms.SetInParent()
    av = _uint(spec.get("artifactVersion"), "spec.artifactVersion", name)
    if av is not None:
        ms.artifactVersion = av
    ms.requirements.extend(_str_list(spec.get("requirements"), "spec.requirements", name))
    if spec.get("memory") is not None:
        ms.memoryBytes = _memory_bytes(spec["memory"], name)
    if spec.get("server"):
        ms.server = _str(spec["server"], "spec.server", name)
    params = spec.get("parameters") or []
    if not isinstance(params, list):
        raise ManifestError(f"spec.parameters of {name} must be a list of {{name, value}}")
    for n, p in enumerate(params):
        p = _check_keys(p, ("name", "value"), f"spec.parameters[{n}]", name)
        ms.parameters.add(name=_str(p.get("name"), f"spec.parameters[{n}].name", name),
                          value=_str(p.get("value"), f"spec.parameters[{n}].value", name))
    if spec.get("endpoint"):
        ms.parameters.add(name=ENDPOINT_PARAMETER, value=_str(spec["endpoint"], "spec.endpoint", name))
    m.deploymentSpec.replicas = _uint(spec.get("replicas"), "spec.replicas", name) or 1
    m.deploymentSpec.minReplicas = _uint(spec.get("minReplicas"), "spec.minReplicas", name) or 0
    m.deploymentSpec.maxReplicas = _uint(spec.get("maxReplicas"), "spec.maxReplicas", name) or 0
    return m


def models_from_yaml(text: str | bytes, source: str | None = None) -> list[scheduler_pb2.Model]:
    """Every ``kind: Model`` document of a (multi-document) YAML text or file content."""
    return _from_yaml(text, source, model_from_manifest)
