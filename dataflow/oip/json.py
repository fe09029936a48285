"""Open Inference Protocol REST JSON <-> protobuf, as the reference pipeline gateway does it.

Pure functions over ``tritonclient.grpc.service_pb2`` messages; no I/O.

Request JSON -> ``ModelInferRequest`` (``request_from_json``):
  * ``data`` may be flat or nested; it is flattened depth-first and must hold exactly
    ``product(shape)`` values (BYTES: ``shape[0]`` or ``product(shape)`` strings, each -> UTF-8
    bytes). The reference zero-pads a short ``data`` to the claimed shape; we refuse it
    (``OipJsonError``, a ``CodecError``), because a 90-byte body claiming ``[1,20000000]`` would otherwise cost
    hundreds of MB. A count mismatch or a value of the wrong JSON type names the tensor and index.
  * parameters: string -> string_param, number -> int64_param (truncated toward zero,
    like the reference), bool -> bool_param; anything else (null, list, object) -> ``OipJsonError``.
  * ``model_name``/``model_version`` are "" and the JSON ``id`` is dropped, like the reference.
    Pass ``keep_id=True`` to keep it instead.

``ModelInferResponse`` -> JSON (``response_to_json``):
  * ``raw_output_contents`` are decoded into typed contents first, by the package's raw-contents
    rule (entry i belongs to output i; see ``dataflow.oip``);
  * ``{"model_name", "model_version"?, "id"?, "parameters"?, "outputs"}`` with each output written
    ``data`` first; BYTES are strings when the output parameter ``content_type`` is ``str`` or
    ``datetime``, otherwise base64 strings (Go's encoding of ``[]byte``). Empty data / shape are
    ``null`` as Go writes nil slices. FP32 values are written with their shortest float32 repr.

Binary tensor extension (KServe v2 / Triton, beyond the reference): ``request_from_http`` reads a
body whose first ``Inference-Header-Content-Length`` bytes are the JSON and whose rest holds the
inputs that carry ``parameters.binary_data_size`` (raw little-endian, BYTES length-prefixed);
``response_to_http`` writes outputs the caller asked for in binary (``binary_data_output`` on the
request, ``binary_data`` on a requested output) after the JSON header the same way.

JSON numbers are written as Go's ``encoding/json`` writes them (``dumps``): whole floats as ``10``,
not ``10.0``; plain decimals from 1e-6 to 1e21, exponents outside, so recorded reference outputs
compare as text.

The reverse directions (``request_to_json``, ``response_from_json``) serve the model gateway's REST
mode and the CLI.
"""
from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dc_field
from decimal import Decimal
from typing import Any

import numpy as np
from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow.oip.datatypes import (
    CONTENTS_FIELD,
    TYPED_FIELD_RANGE,
    CodecError,
)
from dataflow.oip.parameters import (
    INT64_MAX,
    INT64_MIN,
    make_parameter,
    parameters_dict,
)
from dataflow.oip.tensors import raw_count, raw_into_typed, typed_as_raw


class OipJsonError(CodecError):
    """The JSON body (or protobuf message) cannot be converted; the message says what and where."""


CONTENT_TYPE = "content_type"
_STRING_CONTENT_TYPES = ("str", "datetime")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _negative_zero_aware_int(text: str) -> int | float:
    """``-0`` in a response is Go's float -0.0, not the integer 0."""
    return -0.0 if text == "-0" else int(text)


def load_object(body: bytes | str | dict[str, Any], **json_options: Any) -> dict[str, Any]:
    """A JSON body as a dict (a dict is returned as it is); OipJsonError unless it is a JSON object."""
    if isinstance(body, dict):
        return body
    try:
        obj = json.loads(body, **json_options)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OipJsonError(f"body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise OipJsonError("body is not valid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise OipJsonError(f"body must be a JSON object, got {type(obj).__name__}")
    return obj


def _flatten(data: Any, out: list[Any]) -> None:
    """Depth-first flatten of nested JSON lists (the reference ``copyToTensor`` order).

    Iterative: any nesting the JSON parser accepted is flattened without recursion."""
    if not isinstance(data, list):
        out.append(data)
        return
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()


def _set_parameters(target: Any, params: Any, where: str) -> None:
    """JSON parameters: string -> string_param, bool -> bool_param, number -> int64_param
    (truncated toward zero, like Go's ``int64(float64)``); anything else is refused."""
    if params is None:
        return
    if not isinstance(params, dict):
        raise OipJsonError(f"{where}: parameters must be a JSON object, got {type(params).__name__}")
    for k, v in params.items():
        if isinstance(v, float) and math.isfinite(v):
            v = int(v)
        if isinstance(v, int) and not isinstance(v, bool) and not INT64_MIN <= v <= INT64_MAX:
            raise OipJsonError(f"{where}: parameter {k!r} is out of int64 range: {params[k]}")
        if not isinstance(v, (bool, int, str)):
            raise OipJsonError(f"{where}: unknown type for parameter {k!r}: {json.dumps(v)}")
        target[k].CopyFrom(make_parameter(v))


def _tensor_values(name: str, datatype: str, shape: list[int], data: Any, where: str,
                   *, exact: bool = True) -> tuple[str, list[Any]]:
    """Flattened, type-checked element list for one JSON tensor, sized like the reference.

    ``exact=False`` (server responses) keeps every value whatever the shape says."""
    if datatype not in CONTENTS_FIELD:
        raise OipJsonError(f"{where}: unknown datatype {datatype!r} for tensor {name!r}")
    field = CONTENTS_FIELD[datatype]
    flat: list[Any] = []
    if data is not None:
        _flatten(data, flat)
    if exact:
        _check_count(name, datatype, shape, len(flat), "values", where)
    for i, v in enumerate(flat):
        if datatype == "BOOL":
            if not isinstance(v, bool):
                raise OipJsonError(f"{where}: tensor {name!r} value {i} must be a bool, got {json.dumps(v)}")
        elif datatype == "BYTES":
            if not isinstance(v, str):
                raise OipJsonError(f"{where}: tensor {name!r} value {i} must be a string, got {json.dumps(v)}")
            flat[i] = v.encode("utf-8")
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise OipJsonError(f"{where}: tensor {name!r} value {i} must be a number, got {json.dumps(v)}")
            if datatype in TYPED_FIELD_RANGE:
                if isinstance(v, float):
                    if not math.isfinite(v):
                        raise OipJsonError(f"{where}: tensor {name!r} value {i} is not finite")
                    v = int(v)
                lo, hi = TYPED_FIELD_RANGE[datatype]
                if not lo <= v <= hi:
                    raise OipJsonError(f"{where}: tensor {name!r} value {i} ({v}) is out of range for {datatype}")
                flat[i] = v
            else:
                flat[i] = float(v)
    return field, flat


def _check_count(name: str, datatype: str, shape: list[int], count: int, what: str, where: str) -> None:
    """``count`` elements must fill ``shape`` (BYTES may also give one per row, the reference's
    ``shape[0]`` rule). The claimed size is only multiplied, never allocated."""
    slots = math.prod(shape)
    if count == slots or (datatype == "BYTES" and shape and count == shape[0]):
        return
    raise OipJsonError(f"{where}: tensor {name!r} has {count} {what} but shape {shape} holds {slots}")


def _shape(value: Any, name: str, where: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise OipJsonError(f"{where}: tensor {name!r} shape must be a list of integers, got {json.dumps(value)}")
    if any(d < 0 for d in value):
        raise OipJsonError(f"{where}: tensor {name!r} shape has a negative dimension: {value}")
    return value


BINARY_DATA_SIZE = "binary_data_size"  # tensor parameter: its data are that many bytes after the JSON
BINARY_DATA = "binary_data"  # requested-output parameter: write that output in binary
BINARY_DATA_OUTPUT = "binary_data_output"  # request parameter: write every output in binary


class _BinarySection:
    """The bytes after the JSON header of a binary-extension body, handed out in input order."""

    def __init__(self, data: memoryview) -> None:
        self.data, self.offset = data, 0

    def take(self, size: Any, name: str, where: str) -> bytes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise OipJsonError(f"{where}: tensor {name!r} {BINARY_DATA_SIZE} must be a non-negative integer")
        if self.offset + size > len(self.data):
            raise OipJsonError(f"{where}: tensor {name!r} claims {size} bytes of binary data "
                               f"but only {len(self.data) - self.offset} remain")
        chunk = bytes(self.data[self.offset:self.offset + size])
        self.offset += size
        return chunk


def _binary_count(name: str, datatype: str, raw: bytes, shape: list[int], where: str) -> int:
    """Elements in one tensor's binary data (BYTES: walk the length prefixes; nothing is copied)."""
    with _as_json_error():
        return raw_count(raw, datatype, math.prod(shape), f"{where}: tensor {name!r} binary data")


def _fill_tensor(t: Any, spec: Any, where: str, binary: _BinarySection | None = None) -> bytes | None:
    """One JSON input -> ``t``; returns its binary data (then ``t`` has no contents) or None."""
    if not isinstance(spec, dict):
        raise OipJsonError(f"{where} must be a JSON object")
    name = spec.get("name")
    if not isinstance(name, str):
        raise OipJsonError(f"{where}: tensor name must be a string")
    datatype = spec.get("datatype")
    if not isinstance(datatype, str):
        raise OipJsonError(f"{where}: tensor {name!r} datatype must be a string")
    if datatype not in CONTENTS_FIELD:
        raise OipJsonError(f"{where}: unknown datatype {datatype!r} for tensor {name!r}")
    shape = _shape(spec.get("shape"), name, where)
    t.name = name
    t.datatype = datatype
    t.shape.extend(shape)
    params = spec.get("parameters")
    size = params.get(BINARY_DATA_SIZE) if isinstance(params, dict) else None
    if size is not None and isinstance(params, dict):
        params = {k: v for k, v in params.items() if k != BINARY_DATA_SIZE}
    _set_parameters(t.parameters, params, f"{where} ({name})")
    if size is None:
        field, values = _tensor_values(name, datatype, shape, spec.get("data"), where)
        getattr(t.contents, field).extend(values)
        return None
    if binary is None:
        raise OipJsonError(f"{where}: tensor {name!r} has {BINARY_DATA_SIZE} but the request has no "
                           f"Inference-Header-Content-Length header")
    if spec.get("data") is not None:
        raise OipJsonError(f"{where}: tensor {name!r} has both data and {BINARY_DATA_SIZE}")
    raw = binary.take(size, name, where)
    _check_count(name, datatype, shape, _binary_count(name, datatype, raw, shape, where), "binary elements", where)
    return raw


# ------------------------------------------------------------------------------------------------
# raw contents
# ------------------------------------------------------------------------------------------------


@contextmanager
def _as_json_error() -> Iterator[None]:
    """A tensor-level CodecError, raised as the JSON side's error type."""
    try:
        yield
    except OipJsonError:
        raise
    except CodecError as exc:
        raise OipJsonError(str(exc)) from None


def _typed_from_raw(tensors: Any, raws: Any) -> None:
    """Decode raw entries into typed contents; entry i belongs to tensor i (the package rule)."""
    if len(raws) > len(tensors):
        raise OipJsonError(f"Ran out of output contents to fill raw contents of length {len(raws)}")
    with _as_json_error():
        for t, raw in zip(tensors, raws):
            raw_into_typed(t, raw)


def _json_data(t: Any, string_bytes: bool) -> list[Any] | None:
    if not t.HasField("contents"):
        return None
    field = CONTENTS_FIELD.get(t.datatype)
    if field is None:
        raise OipJsonError(f"Unknown type {t.datatype}")
    values = getattr(t.contents, field)
    if not len(values):
        return None  # Go marshals a nil slice as null
    if t.datatype == "BYTES":
        if string_bytes:
            return [v.decode("utf-8", "replace") for v in values]
        return [base64.b64encode(v).decode("ascii") for v in values]
    if field == "fp32_contents":
        # Shortest float32 repr (Go encodes float32 that way): 1.1f -> 1.1, not 1.100000023841858.
        return [float(s) for s in np.asarray(values, dtype=np.float32).astype(str)]
    return list(values)


def _output_to_json(t: Any, *, bytes_as_strings: bool = False) -> dict[str, Any]:
    params = parameters_dict(t.parameters)
    string_bytes = bytes_as_strings or (
        CONTENT_TYPE in t.parameters
        and t.parameters[CONTENT_TYPE].string_param in _STRING_CONTENT_TYPES)
    out = {"data": _json_data(t, string_bytes), "name": t.name,
           "shape": list(t.shape) or None, "datatype": t.datatype}
    if params:
        out["parameters"] = params
    return out


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------


def request_from_json(body: bytes | str | dict[str, Any], *, model_name: str = "", model_version: str = "",
                      keep_id: bool = False) -> ModelInferRequest:
    """REST request body -> ``ModelInferRequest``. Raises ``OipJsonError``."""
    return _request(load_object(body), None, model_name, model_version, keep_id)[0]


@dataclass
class OutputFormat:
    """How the caller wants the outputs of a response written (binary extension)."""

    binary_default: bool = False  # request parameter binary_data_output
    binary: dict[str, bool] = dc_field(default_factory=dict)  # requested output -> binary_data

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


def request_from_http(body: bytes, header_length: str | int | None) -> tuple[ModelInferRequest, OutputFormat]:
    """An HTTP infer body (JSON, or JSON + binary tensors when ``Inference-Header-Content-Length``
    is given) -> the request to forward and the output format the caller asked for.

    The binary-extension parameters are consumed here and not forwarded. When every input is
    binary the request carries ``raw_input_contents`` (no copy into Python values); in a mixed
    request the binary inputs are decoded into typed contents, as protobuf allows raw contents
    only for all inputs or none."""
    binary = None
    if header_length is not None:
        try:
            n = int(header_length)
        except (TypeError, ValueError):
            raise OipJsonError(f"Inference-Header-Content-Length {header_length!r} is not an integer") from None
        if not 0 <= n <= len(body):
            raise OipJsonError(f"Inference-Header-Content-Length {n} is outside the {len(body)}-byte body")
        binary = _BinarySection(memoryview(body)[n:])
        body = bytes(memoryview(body)[:n])
    try:
        obj = load_object(body)
    except OipJsonError as exc:
        if binary is None and "Extra data" in str(exc):  # what a binary body looks like without the header
            raise OipJsonError(f"{exc} (binary tensor data needs the Inference-Header-Content-Length header)") from None
        raise
    req, raws = _request(obj, binary, "", "", False)
    if binary is not None and binary.offset != len(binary.data):
        raise OipJsonError(f"{len(binary.data) - binary.offset} bytes of binary data follow the last binary input")
    if any(r is not None for r in raws):
        if all(r is not None for r in raws):
            req.raw_input_contents.extend(raws)
        else:
            for t, raw in zip(req.inputs, raws):
                if raw is not None:
                    with _as_json_error():
                        raw_into_typed(t, raw)
    fmt = OutputFormat()
    if BINARY_DATA_OUTPUT in req.parameters:
        fmt.binary_default = _truthy(req.parameters[BINARY_DATA_OUTPUT])
        del req.parameters[BINARY_DATA_OUTPUT]
    for o in req.outputs:
        if BINARY_DATA in o.parameters:
            fmt.binary[o.name] = _truthy(o.parameters[BINARY_DATA])
            del o.parameters[BINARY_DATA]
    return req, fmt


def _truthy(p: Any) -> bool:
    """A flag parameter as clients send it: ``true``, or a number / string standing for one."""
    which = p.WhichOneof("parameter_choice")
    value = getattr(p, which) if which else False
    return value.lower() in ("true", "1") if isinstance(value, str) else bool(value)


def _request(obj: dict[str, Any], binary: _BinarySection | None, model_name: str, model_version: str,
             keep_id: bool) -> tuple[ModelInferRequest, list[bytes | None]]:
    req = ModelInferRequest(model_name=model_name, model_version=model_version)
    if keep_id and isinstance(obj.get("id"), str):
        req.id = obj["id"]
    _set_parameters(req.parameters, obj.get("parameters"), "request")
    inputs = obj.get("inputs")
    if inputs is not None and not isinstance(inputs, list):
        raise OipJsonError("request: inputs must be a list")
    raws = [_fill_tensor(req.inputs.add(), spec, f"inputs[{i}]", binary) for i, spec in enumerate(inputs or [])]
    outputs = obj.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise OipJsonError("request: outputs must be a list")
    for i, spec in enumerate(outputs or []):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise OipJsonError(f"outputs[{i}]: requested output needs a string name")
        o = req.outputs.add(name=spec["name"])
        _set_parameters(o.parameters, spec.get("parameters"), f"outputs[{i}]")
    return req, raws


def response_to_json(resp: ModelInferResponse | bytes) -> dict[str, Any]:
    """``ModelInferResponse`` (message or serialized bytes) -> JSON object."""
    parsed = _parse_response(resp)
    if parsed is resp and resp.raw_output_contents:  # the caller's message: fill a copy, not it
        parsed = ModelInferResponse()
        parsed.CopyFrom(resp)
    resp = parsed
    if resp.raw_output_contents:
        _typed_from_raw(resp.outputs, resp.raw_output_contents)
        del resp.raw_output_contents[:]
    out: dict[str, Any] = {"model_name": resp.model_name}
    if resp.model_version:
        out["model_version"] = resp.model_version
    if resp.id:
        out["id"] = resp.id
    params = parameters_dict(resp.parameters)
    if params:
        out["parameters"] = params
    outputs = [_output_to_json(t) for t in resp.outputs]
    if outputs:
        out["outputs"] = outputs
    return out


def response_to_json_bytes(resp: ModelInferResponse | bytes) -> bytes:
    return dumps(response_to_json(resp)).encode()


def _parse_response(resp: ModelInferResponse | bytes) -> ModelInferResponse:
    if isinstance(resp, (bytes, bytearray, memoryview)):
        msg = ModelInferResponse()
        try:
            msg.ParseFromString(bytes(resp))
        except Exception as exc:  # protobuf DecodeError
            raise OipJsonError(f"value is not a ModelInferResponse: {exc}") from exc
        return msg
    return resp


def _raw_bytes(t: Any, raw: bytes | None) -> bytes:
    """One output's data as binary-extension bytes (raw contents as they are, typed ones encoded)."""
    if raw is not None:
        return raw
    with _as_json_error():
        return typed_as_raw(t)


def response_to_http(resp: ModelInferResponse | bytes, fmt: OutputFormat | None) -> tuple[bytes, int | None]:
    """Response -> HTTP body and the ``Inference-Header-Content-Length`` to send (None: plain JSON).

    Outputs the caller wants in binary carry ``parameters.binary_data_size`` and no ``data``; their
    bytes follow the JSON header in output order."""
    msg = _parse_response(resp)
    if fmt is None or not any(fmt.is_binary(t.name) for t in msg.outputs):
        return response_to_json_bytes(msg), None
    unknown = [t.datatype for t in msg.outputs if t.datatype not in CONTENTS_FIELD]
    if unknown:
        raise OipJsonError(f"Unknown type {unknown[0]}")
    raws = list(msg.raw_output_contents)
    binary_parts: list[bytes] = []
    keep = ModelInferResponse()
    keep.CopyFrom(msg)
    del keep.raw_output_contents[:]
    for i, t in enumerate(keep.outputs):
        if fmt.is_binary(t.name):
            data = _raw_bytes(t, raws[i] if i < len(raws) else None)
            binary_parts.append(data)
            t.ClearField("contents")
            t.parameters[BINARY_DATA_SIZE].int64_param = len(data)
        elif i < len(raws):  # a JSON output of a raw response: decode its bytes into typed contents
            with _as_json_error():
                raw_into_typed(t, raws[i])
    obj = response_to_json(keep)
    for o in obj.get("outputs", ()):
        if BINARY_DATA_SIZE in o.get("parameters", {}):
            o.pop("data", None)
    header = dumps(obj).encode()
    return header + b"".join(binary_parts), len(header)


# ---- JSON text as Go's encoding/json writes it -------------------------------------------------


def go_float(f: float) -> str:
    """A float64 as Go's ``encoding/json`` writes it: shortest digits, ``10`` not ``10.0``, plain
    decimals for 1e-6 <= |f| < 1e21 and ``1e-7`` / ``1e+21`` style exponents outside."""
    if not math.isfinite(f):
        return json.dumps(f)  # Go refuses these; keep Python's NaN / Infinity
    s = repr(f)
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        mantissa, exp = s.split("e")
        mantissa = mantissa.removesuffix(".0")
        sign, digits = exp[0], exp[1:].lstrip("0") or "0"
        return f"{mantissa}e{sign}{digits.zfill(2) if sign == '+' else digits}"
    if "e" in s:
        s = format(Decimal(s), "f")
    return s.removesuffix(".0")


def dumps(obj: Any) -> str:
    """Compact JSON with floats formatted by ``go_float`` (everything else as ``json.dumps``)."""
    if isinstance(obj, float):
        return go_float(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + dumps(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        if obj and all(type(v) is float for v in obj):
            return "[" + ",".join(map(go_float, obj)) + "]"
        if not any(isinstance(v, (float, dict, list, tuple)) for v in obj):
            return json.dumps(obj, separators=(",", ":"))
        return "[" + ",".join(map(dumps, obj)) + "]"
    return json.dumps(obj, separators=(",", ":"))


def request_to_json(req: ModelInferRequest | bytes) -> dict[str, Any]:
    """``ModelInferRequest`` -> REST request body (raw input contents decoded; BYTES as strings).

    Used by the model gateway's REST mode: an OIP server expects BYTES request data as strings.
    """
    if isinstance(req, (bytes, bytearray, memoryview)):
        msg = ModelInferRequest()
        msg.ParseFromString(bytes(req))
        req = msg
    if req.raw_input_contents:
        copy = ModelInferRequest()
        copy.CopyFrom(req)
        req = copy
        _typed_from_raw(req.inputs, req.raw_input_contents)
        del req.raw_input_contents[:]
    out: dict[str, Any] = {}
    if req.id:
        out["id"] = req.id
    params = parameters_dict(req.parameters)
    if params:
        out["parameters"] = params
    inputs = []
    for t in req.inputs:
        d = {"name": t.name, "shape": list(t.shape), "datatype": t.datatype}
        p = parameters_dict(t.parameters)
        if p:
            d["parameters"] = p
        d["data"] = _json_data(t, string_bytes=True) or []
        inputs.append(d)
    out["inputs"] = inputs
    if req.outputs:
        outs = []
        for o in req.outputs:
            d = {"name": o.name}
            p = parameters_dict(o.parameters)
            if p:
                d["parameters"] = p
            outs.append(d)
        out["outputs"] = outs
    return out


def response_from_json(body: bytes | str | dict[str, Any], *, bytes_are_base64: bool = False) -> ModelInferResponse:
    """REST response body (e.g. MLServer's) -> ``ModelInferResponse``.

    BYTES data are strings. An OIP server writes them as text; with ``bytes_are_base64`` (our own
    gateway's JSON for outputs without a string content_type) they are base64-decoded.
    """
    obj = load_object(body, parse_int=_negative_zero_aware_int)
    resp = ModelInferResponse()
    for field in ("model_name", "model_version", "id"):
        v = obj.get(field)
        if isinstance(v, str):
            setattr(resp, field, v)
    _set_parameters_lenient(resp.parameters, obj.get("parameters"))
    outputs = obj.get("outputs") or []
    if not isinstance(outputs, list):
        raise OipJsonError("response: outputs must be a list")
    for i, spec in enumerate(outputs):
        where = f"outputs[{i}]"
        if not isinstance(spec, dict):
            raise OipJsonError(f"{where} must be a JSON object")
        t = resp.outputs.add()
        name = spec.get("name")
        t.name = name if isinstance(name, str) else ""
        t.datatype = spec.get("datatype") or ""
        shape = _shape(spec.get("shape"), t.name, where)
        t.shape.extend(shape)
        _set_parameters_lenient(t.parameters, spec.get("parameters"))
        data = spec.get("data")
        if t.datatype == "BYTES" and data is not None:
            flat: list[Any] = []
            _flatten(data, flat)
            text = (CONTENT_TYPE in t.parameters
                    and t.parameters[CONTENT_TYPE].string_param in _STRING_CONTENT_TYPES)
            vals = []
            for j, v in enumerate(flat):
                if not isinstance(v, str):
                    raise OipJsonError(f"{where}: tensor {t.name!r} value {j} must be a string")
                vals.append(base64.b64decode(v) if bytes_are_base64 and not text else v.encode("utf-8"))
            t.contents.bytes_contents.extend(vals)
        elif data is not None:
            field, values = _tensor_values(t.name, t.datatype, shape, data, where, exact=False)
            getattr(t.contents, field).extend(values)
    return resp


def _set_parameters_lenient(target: Any, params: Any) -> None:
    """Response parameters from an OIP server: keep what maps onto InferParameter, skip the rest."""
    if not isinstance(params, dict):
        return
    for k, v in params.items():
        if isinstance(v, bool):
            target[k].bool_param = v
        elif isinstance(v, str):
            target[k].string_param = v
        elif isinstance(v, int) and -(2**63) <= v < 2**63:
            target[k].int64_param = v
        elif isinstance(v, float) and math.isfinite(v):
            target[k].int64_param = int(v)
