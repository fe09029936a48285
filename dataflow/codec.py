"""The OIP (Open Inference Protocol / KServe v2) tensor codec used on every dataflow hop.

Everything here is a pure function over ``tritonclient.grpc.service_pb2`` messages
(``ModelInferRequest`` / ``ModelInferResponse``), which are field-for-field the messages Seldon
writes to Kafka. Three layers:

* bytes <-> messages: :func:`parse_request`, :func:`parse_response` (schema-registry prefix
  stripped first).
* messages <-> numpy: :func:`tensor_to_array`, :func:`request_tensors`, :func:`make_request` ...
  for every OIP datatype, typed contents or raw little-endian bytes.
* message -> message, the engine's hot path: the four step converters (one per chain type),
  :func:`join_values` (join merge), :func:`merge_batch` (batching), :func:`to_raw` / :func:`to_typed`.
  These copy protobuf fields directly and touch numpy only where a typed<->raw conversion is needed.

Decisions (where the reference is silent or broken):

* Empty bytes parse to an empty message. Protobuf serialises an all-default message to ``b""``,
  so it is a legitimate value; callers drop it with :func:`has_tensors`. ``None`` (a tombstone)
  and undecodable bytes raise :class:`CodecError`.
* FP16. Typed contents carry FP16 in ``fp32_contents`` (there is no half field). Raw FP16 written
  by this module is IEEE half, 2 bytes per element -- what Triton and MLServer send and expect.
  The reference converters instead write 4-byte floats for FP16 (a known reference bug). Reading raw FP16
  accepts both: with ``n`` elements from the shape, ``2n`` bytes are halfs and ``4n`` bytes are the
  reference's floats (the two can only coincide when ``n == 0``).
* Raw alignment. ``raw_*_contents[i]`` belongs to tensor ``i``. When a message has fewer raw
  entries than tensors, tensors without a raw entry use their typed contents (reading, :func:`to_raw`,
  :func:`merge_batch`); the reference would misalign them.
* BYTES arrays are numpy object arrays of ``bytes``; ``str`` elements are UTF-8 encoded on the way in.
  Because the REST gateway stores a BYTES tensor in ``shape[0]`` elements whatever the other
  dimensions, a BYTES tensor whose element count equals ``shape[0]`` but not the full
  product decodes to a 1-D array of ``shape[0]`` elements instead of failing.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Union

import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc.service_pb2 import InferParameter, ModelInferRequest, ModelInferResponse

__all__ = [
    "CodecError",
    "DATATYPES",
    "CONTENTS_FIELD",
    "NUMPY_DTYPE",
    "strip_schema_prefix",
    "parse_request",
    "parse_response",
    "datatype_of",
    "tensor_to_array",
    "check_tensors",
    "make_request",
    "make_response",
    "request_arrays",
    "response_arrays",
    "request_tensors",
    "response_tensors",
    "convert_to_request",
    "filter_request",
    "filter_response",
    "convert_to_response",
    "has_tensors",
    "join_values",
    "to_raw",
    "to_typed",
    "merge_batch",
    "make_parameter",
    "parameter_value",
]

InferMessage = Union[ModelInferRequest, ModelInferResponse]


class CodecError(ValueError):
    """Bytes or tensors that cannot be decoded/encoded; the message names the tensor and the numbers."""


DATATYPES: tuple[str, ...] = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
    "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES",
)

# Which InferTensorContents field holds each datatype's typed values (as the reference's
# batching and REST conversion use them).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP16": "fp32_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

# The numpy dtype a datatype decodes to (little-endian, as on the wire).
NUMPY_DTYPE: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

# numpy dtype of the protobuf repeated field that carries a datatype's typed values.
_TYPED_FIELD_DTYPE: dict[str, np.dtype] = {
    "bool_contents": np.dtype(np.bool_),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}

_DATATYPE_BY_KIND_SIZE: dict[tuple[str, int], str] = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8", ("u", 2): "UINT16", ("u", 4): "UINT32", ("u", 8): "UINT64",
    ("i", 1): "INT8", ("i", 2): "INT16", ("i", 4): "INT32", ("i", 8): "INT64",
    ("f", 2): "FP16", ("f", 4): "FP32", ("f", 8): "FP64",
}

_LENGTH_PREFIX = struct.Struct("<I")
_SCHEMA_PREFIX_LEN = 6


# --------------------------------------------------------------------------- bytes <-> messages

def strip_schema_prefix(data: bytes) -> bytes:
    """Drop Confluent schema-registry framing (0x00, 4-byte schema id, 1 index byte).

    A protobuf message never starts with byte 0, so the rule is safe to apply to every value."""
    if len(data) >= _SCHEMA_PREFIX_LEN and data[0] == 0:
        return data[_SCHEMA_PREFIX_LEN:]
    return data


def _parse(cls, data, what: str):
    if data is None:
        raise CodecError(f"cannot parse {what}: the record has no value (tombstone)")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"cannot parse {what}: expected bytes, got {type(data).__name__}")
    payload = strip_schema_prefix(data if isinstance(data, bytes) else bytes(data))
    try:
        return cls.FromString(payload)
    except (DecodeError, RuntimeError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot parse {what} from {len(data)} bytes: {exc}") from exc


def parse_request(data: bytes | None) -> ModelInferRequest:
    """Bytes of an ``*.inputs`` record -> ModelInferRequest (``b""`` -> empty request)."""
    return _parse(ModelInferRequest, data, "ModelInferRequest")


def parse_response(data: bytes | None) -> ModelInferResponse:
    """Bytes of an ``*.outputs`` record -> ModelInferResponse (``b""`` -> empty response)."""
    return _parse(ModelInferResponse, data, "ModelInferResponse")


# --------------------------------------------------------------------------- parameters

def make_parameter(value: Any, where: str = "parameter") -> InferParameter:
    """Python bool/int/str (or an InferParameter) -> InferParameter with Seldon's three fields."""
    p = InferParameter()
    if isinstance(value, InferParameter):
        p.CopyFrom(value)
    elif isinstance(value, (bool, np.bool_)):
        p.bool_param = bool(value)
    elif isinstance(value, (int, np.integer)):
        p.int64_param = int(value)
    elif isinstance(value, str):
        p.string_param = value
    else:
        raise CodecError(f"{where}: value {value!r} of type {type(value).__name__} is not bool, int or str")
    return p


def parameter_value(p: InferParameter) -> bool | int | str | float | None:
    """The Python value held by an InferParameter (None if unset)."""
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def _set_parameters(target, parameters: Mapping | None, where: str) -> None:
    if not parameters:
        return
    for key, value in parameters.items():
        target[key].CopyFrom(make_parameter(value, f"{where} {key!r}"))


# --------------------------------------------------------------------------- numpy -> tensors

def datatype_of(array) -> str:
    """The OIP datatype for a numpy array (object / bytes / str arrays are BYTES)."""
    dtype = np.asarray(array).dtype if not isinstance(array, np.ndarray) else array.dtype
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _DATATYPE_BY_KIND_SIZE[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise CodecError(f"numpy dtype {dtype} has no OIP datatype") from None


def _as_bytes(value, where: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, np.str_)):
        return str(value).encode("utf-8")
    raise CodecError(f"{where}: BYTES element {value!r} is not bytes or str")


def _to_ndarray(value, datatype: str | None, where: str) -> np.ndarray:
    """Coerce user input to an array without numpy's fixed-width bytes truncation for BYTES."""
    if isinstance(value, np.ndarray):
        return value
    if datatype == "BYTES" or _looks_like_bytes(value):
        return np.array(value, dtype=object)
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{where}: cannot make an array from {type(value).__name__}: {exc}") from exc


def _looks_like_bytes(value) -> bool:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return isinstance(value, (bytes, bytearray, str))


def _flat_values(arr: np.ndarray, datatype: str, where: str) -> np.ndarray:
    """Flatten (C order) and cast to the datatype's numpy dtype; BYTES -> object array of bytes."""
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        out = np.empty(flat.shape[0], dtype=object)
        for i, v in enumerate(flat.tolist()):
            out[i] = _as_bytes(v, where)
        return out
    if flat.dtype.kind in ("O", "S", "U"):
        raise CodecError(f"{where}: {flat.dtype} values cannot be encoded as {datatype}")
    try:
        return flat.astype(NUMPY_DTYPE[datatype], copy=False)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{where}: cannot cast {flat.dtype} to {datatype}: {exc}") from exc


def _encode_raw(flat: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        pack = _LENGTH_PREFIX.pack
        return b"".join(pack(len(b)) + b for b in flat)
    return flat.astype(NUMPY_DTYPE[datatype], copy=False).tobytes()


def _encode_typed(contents, flat: np.ndarray, datatype: str) -> None:
    field = getattr(contents, CONTENTS_FIELD[datatype])
    if datatype == "BYTES":
        field.extend(flat.tolist())
    elif datatype == "FP16":
        field.extend(flat.astype(np.float32).tolist())
    else:
        field.extend(flat.tolist())


def _fill(msg, tensors_field: str, raw_field: str, tensors, *, id: str, parameters, raw: bool,
          datatypes: Mapping[str, str] | None, tensor_parameters: Mapping[str, Mapping] | None):
    msg.id = id
    _set_parameters(msg.parameters, parameters, "message parameter")
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    out_tensors = getattr(msg, tensors_field)
    out_raw = getattr(msg, raw_field)
    for name, value in items:
        where = f"tensor {name!r}"
        datatype = (datatypes or {}).get(name)
        if datatype is not None and datatype not in NUMPY_DTYPE:
            raise CodecError(f"{where}: unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}")
        arr = _to_ndarray(value, datatype, where)
        if datatype is None:
            datatype = datatype_of(arr)
        flat = _flat_values(arr, datatype, where)
        t = out_tensors.add()
        t.name = name
        t.datatype = datatype
        t.shape.extend(int(d) for d in arr.shape)
        if tensor_parameters and name in tensor_parameters:
            _set_parameters(t.parameters, tensor_parameters[name], f"{where} parameter")
        if raw:
            out_raw.append(_encode_raw(flat, datatype))
        else:
            _encode_typed(t.contents, flat, datatype)
    return msg


def make_request(tensors: Mapping[str, Any] | Sequence[tuple[str, Any]], *, id: str = "",
                 parameters: Mapping | None = None, raw: bool = False,
                 datatypes: Mapping[str, str] | None = None,
                 tensor_parameters: Mapping[str, Mapping] | None = None) -> ModelInferRequest:
    """Build a ModelInferRequest from named arrays (typed contents, or raw_input_contents if ``raw``).

    ``datatypes`` overrides the inferred datatype per tensor name; ``parameters`` values are
    bool/int/str (or InferParameter)."""
    return _fill(ModelInferRequest(), "inputs", "raw_input_contents", tensors, id=id,
                 parameters=parameters, raw=raw, datatypes=datatypes, tensor_parameters=tensor_parameters)


def make_response(tensors: Mapping[str, Any] | Sequence[tuple[str, Any]], *, id: str = "",
                  parameters: Mapping | None = None, raw: bool = False,
                  datatypes: Mapping[str, str] | None = None,
                  tensor_parameters: Mapping[str, Mapping] | None = None,
                  model_name: str = "", model_version: str = "") -> ModelInferResponse:
    """Build a ModelInferResponse from named arrays (typed contents, or raw_output_contents if ``raw``)."""
    msg = _fill(ModelInferResponse(), "outputs", "raw_output_contents", tensors, id=id,
                parameters=parameters, raw=raw, datatypes=datatypes, tensor_parameters=tensor_parameters)
    msg.model_name = model_name
    msg.model_version = model_version
    return msg


# --------------------------------------------------------------------------- tensors -> numpy

def _check_datatype(tensor) -> str:
    datatype = tensor.datatype
    if datatype not in NUMPY_DTYPE:
        raise CodecError(f"tensor {tensor.name!r}: unknown datatype {datatype!r}; "
                         f"expected one of {', '.join(DATATYPES)}")
    return datatype


def _split_bytes(raw: bytes, where: str) -> list[bytes]:
    """Raw BYTES: each element is a 4-byte little-endian length then that many bytes."""
    out = []
    pos, end = 0, len(raw)
    unpack = _LENGTH_PREFIX.unpack_from
    while pos < end:
        if end - pos < 4:
            raise CodecError(f"{where}: raw BYTES contents end with a truncated {end - pos}-byte "
                             f"length prefix at offset {pos} of {end}")
        (n,) = unpack(raw, pos)
        pos += 4
        if pos + n > end:
            raise CodecError(f"{where}: raw BYTES element {len(out)} declares {n} bytes at offset {pos} "
                             f"but only {end - pos} remain")
        out.append(raw[pos:pos + n])
        pos += n
    return out


def _decode_raw(raw: bytes, datatype: str, count: int | None, where: str) -> np.ndarray:
    """Raw little-endian bytes -> flat array. ``count`` (elements from the shape) is needed to tell
    2-byte from 4-byte FP16; None means 'infer' (then FP16 is read as halfs)."""
    if datatype == "BYTES":
        items = _split_bytes(raw, where)
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr
    size = len(raw)
    if datatype == "FP16" and count is not None and count > 0 and size == 4 * count:
        return np.frombuffer(raw, dtype="<f4").astype(np.float16)  # the reference's 4-byte FP16
    dtype = NUMPY_DTYPE[datatype]
    itemsize = 1 if datatype == "BOOL" else dtype.itemsize
    if size % itemsize:
        raise CodecError(f"{where}: raw contents of {size} bytes are not a multiple of the "
                         f"{itemsize}-byte {datatype} element size")
    if datatype == "BOOL":
        return np.frombuffer(raw, dtype=np.uint8) != 0
    return np.frombuffer(raw, dtype=dtype)


def _decode_typed(contents, datatype: str, where: str) -> np.ndarray:
    field_name = CONTENTS_FIELD[datatype]
    values = getattr(contents, field_name)
    if datatype == "BYTES":
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
        return arr
    wide = np.array(values, dtype=_TYPED_FIELD_DTYPE[field_name])
    target = NUMPY_DTYPE[datatype]
    if target == wide.dtype:
        return wide
    if target.kind in ("i", "u") and wide.size:
        info = np.iinfo(target)
        lo, hi = wide.min(), wide.max()
        if lo < info.min or hi > info.max:
            raise CodecError(f"{where}: {field_name} value {lo if lo < info.min else hi} "
                             f"is out of range for {datatype}")
    return wide.astype(target)


def _shape_of(tensor, where: str) -> tuple[int, ...]:
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise CodecError(f"{where}: shape {list(shape)} has a negative dimension")
    return shape


def tensor_to_array(tensor, raw: bytes | None = None) -> np.ndarray:
    """One InferInputTensor / InferOutputTensor -> numpy array shaped by ``tensor.shape``.

    ``raw`` is the tensor's ``raw_*_contents`` entry if the message carries raw contents (then typed
    contents are ignored). Raises CodecError on an unknown datatype, a raw length that is not a
    multiple of the element size, a BYTES length prefix overrunning the buffer, or an element count
    that does not match the shape."""
    where = f"tensor {tensor.name!r}"
    datatype = _check_datatype(tensor)
    shape = _shape_of(tensor, where)
    count = math.prod(shape)
    if raw is not None:
        flat = _decode_raw(bytes(raw), datatype, count, where)
    else:
        flat = _decode_typed(tensor.contents, datatype, where)
    if flat.shape[0] != count:
        if datatype == "BYTES" and len(shape) > 1 and flat.shape[0] == shape[0]:
            return flat  # REST-style BYTES: one element per row (see module docstring)
        source = "raw contents" if raw is not None else f"{CONTENTS_FIELD[datatype]}"
        raise CodecError(f"{where}: {source} hold {flat.shape[0]} {datatype} elements "
                         f"but shape {list(shape)} needs {count}")
    return flat.reshape(shape)


def _raw_count(raw: bytes, datatype: str, count: int, where: str) -> int:
    """Elements in a raw entry without decoding it (BYTES: walk the length prefixes)."""
    if datatype == "BYTES":
        n, pos, end = 0, 0, len(raw)
        while pos < end:
            if end - pos < 4:
                raise CodecError(f"{where}: raw BYTES contents end with a truncated length prefix")
            pos += 4 + _LENGTH_PREFIX.unpack_from(raw, pos)[0]
            if pos > end:
                raise CodecError(f"{where}: raw BYTES element {n} overruns the contents")
            n += 1
        return n
    itemsize = 1 if datatype == "BOOL" else NUMPY_DTYPE[datatype].itemsize
    if datatype == "FP16" and count > 0 and len(raw) == 4 * count:
        return count  # the reference's 4-byte FP16
    if len(raw) % itemsize:
        raise CodecError(f"{where}: raw contents of {len(raw)} bytes are not a multiple of the "
                         f"{itemsize}-byte {datatype} element size")
    return len(raw) // itemsize


def check_tensors(msg: InferMessage) -> None:
    """Raise CodecError unless every tensor's contents fill its shape, the way ``tensor_to_array``
    would read them, without building any array: counts are compared, the claimed
    ``product(shape)`` is only multiplied. For a front door that must refuse a small message
    claiming a huge shape before it costs memory."""
    tensors, raws = _parts(msg)
    if len(raws) > len(tensors):
        raise CodecError(f"{len(raws)} raw contents for {len(tensors)} tensors")
    for i, t in enumerate(tensors):
        where = f"tensor {t.name!r}"
        datatype = _check_datatype(t)
        shape = _shape_of(t, where)
        count = math.prod(shape)
        if i < len(raws):
            got, source = _raw_count(raws[i], datatype, count, where), "raw contents"
        else:
            got, source = len(getattr(t.contents, CONTENTS_FIELD[datatype])), CONTENTS_FIELD[datatype]
        if got != count and not (datatype == "BYTES" and len(shape) > 1 and got == shape[0]):
            raise CodecError(f"{where}: {source} hold {got} {datatype} elements but shape {list(shape)} needs {count}")


def _tensors(tensors, raws) -> list[tuple[str, np.ndarray]]:
    n_raw = len(raws)
    return [(t.name, tensor_to_array(t, raws[i] if i < n_raw else None)) for i, t in enumerate(tensors)]


def request_tensors(req: ModelInferRequest) -> list[tuple[str, np.ndarray]]:
    """All inputs of a request as (name, array), in order, duplicates kept."""
    return _tensors(req.inputs, req.raw_input_contents)


def response_tensors(resp: ModelInferResponse) -> list[tuple[str, np.ndarray]]:
    """All outputs of a response as (name, array), in order, duplicates kept."""
    return _tensors(resp.outputs, resp.raw_output_contents)


def request_arrays(req: ModelInferRequest) -> dict[str, np.ndarray]:
    """Inputs by name (a repeated name: the last tensor wins; use request_tensors to keep all)."""
    return dict(request_tensors(req))


def response_arrays(resp: ModelInferResponse) -> dict[str, np.ndarray]:
    """Outputs by name (a repeated name: the last tensor wins; use response_tensors to keep all)."""
    return dict(response_tensors(resp))


# --------------------------------------------------------------------------- step converters

def _parts(msg: InferMessage):
    """(tensors, raw contents) of either message type."""
    if isinstance(msg, ModelInferRequest):
        return msg.inputs, msg.raw_input_contents
    if isinstance(msg, ModelInferResponse):
        return msg.outputs, msg.raw_output_contents
    raise CodecError(f"expected ModelInferRequest or ModelInferResponse, got {type(msg).__name__}")


def _select(src: InferMessage, dst: InferMessage, tensors: Collection[str] | None,
            renames: Mapping[str, str] | None) -> InferMessage:
    """The rules every chain type shares: id + parameters, selected (renamed) tensors, raw aligned by index."""
    src_tensors, src_raw = _parts(src)
    dst_tensors, dst_raw = _parts(dst)
    dst.id = src.id
    if src.parameters:
        dst.parameters.MergeFrom(src.parameters)
    if isinstance(tensors, str):  # one name, not a collection of characters
        tensors = (tensors,)
    if tensors and not isinstance(tensors, (set, frozenset, Mapping)):
        tensors = frozenset(tensors)
    n_raw = len(src_raw)
    same_kind = type(src) is type(dst)
    for i, t in enumerate(src_tensors):
        name = t.name
        if tensors and name not in tensors:
            continue
        out = dst_tensors.add()
        if same_kind:
            out.CopyFrom(t)
        else:  # InferInputTensor and InferOutputTensor share field numbers 1-5
            out.MergeFromString(t.SerializeToString())
        if n_raw:
            out.ClearField("contents")
            if i < n_raw:
                dst_raw.append(src_raw[i])
        if renames:
            new_name = renames.get(name)
            if new_name is not None:
                out.name = new_name
    return dst


def convert_to_request(resp: ModelInferResponse, tensors: Collection[str] | None = None,
                       renames: Mapping[str, str] | None = None) -> ModelInferRequest:
    """OUTPUT_INPUT step: response outputs -> request inputs (``renames``: original -> new name)."""
    return _select(resp, ModelInferRequest(), tensors, renames)


def filter_request(req: ModelInferRequest, tensors: Collection[str] | None = None,
                   renames: Mapping[str, str] | None = None) -> ModelInferRequest:
    """INPUT_INPUT step: a new request with only id, parameters and the selected inputs."""
    return _select(req, ModelInferRequest(), tensors, renames)


def filter_response(resp: ModelInferResponse, tensors: Collection[str] | None = None,
                    renames: Mapping[str, str] | None = None) -> ModelInferResponse:
    """OUTPUT_OUTPUT step: a new response with only id, parameters and the selected outputs."""
    return _select(resp, ModelInferResponse(), tensors, renames)


def convert_to_response(req: ModelInferRequest, tensors: Collection[str] | None = None,
                        renames: Mapping[str, str] | None = None) -> ModelInferResponse:
    """INPUT_OUTPUT step: request inputs -> response outputs."""
    return _select(req, ModelInferResponse(), tensors, renames)


def has_tensors(msg: InferMessage | None) -> bool:
    """False for results the dataflow drops: no inputs (request) / no outputs (response)."""
    if msg is None:
        return False
    return len(_parts(msg)[0]) > 0


# --------------------------------------------------------------------------- typed <-> raw

def _tensor_raw_from_typed(tensor) -> bytes:
    """One tensor's typed contents as raw bytes (no shape check: a transport conversion)."""
    datatype = _check_datatype(tensor)
    where = f"tensor {tensor.name!r}"
    flat = _decode_typed(tensor.contents, datatype, where)
    return _encode_raw(flat, datatype)


def to_raw(msg: InferMessage) -> InferMessage:
    """A copy with every tensor's data in ``raw_*_contents`` and typed contents cleared.

    Tensors that already have a raw entry keep it; the others are encoded from typed contents.
    The input message is not modified."""
    tensors, raws = _parts(msg)
    n_raw = len(raws)
    out = _copy(msg)
    out_tensors, out_raw = _parts(out)
    new_raw = [raws[i] if i < n_raw else _tensor_raw_from_typed(t) for i, t in enumerate(tensors)]
    new_raw.extend(raws[len(tensors):])
    del out_raw[:]
    out_raw.extend(new_raw)
    for t in out_tensors:
        t.ClearField("contents")
    return out


def to_typed(msg: InferMessage) -> InferMessage:
    """A copy with every raw entry decoded into its tensor's typed contents and raw cleared.

    FP16 goes to ``fp32_contents``. The input message is not modified."""
    out = _copy(msg)
    out_tensors, out_raw = _parts(out)
    n = min(len(out_raw), len(out_tensors))
    for i in range(n):
        t = out_tensors[i]
        datatype = _check_datatype(t)
        where = f"tensor {t.name!r}"
        count = math.prod(_shape_of(t, where))
        flat = _decode_raw(out_raw[i], datatype, count, where)
        t.ClearField("contents")
        _encode_typed(t.contents, flat, datatype)
    del out_raw[:]
    return out


def _copy(msg: InferMessage) -> InferMessage:
    out = msg.__class__()
    out.CopyFrom(msg)
    return out


# --------------------------------------------------------------------------- joins

def join_values(left: InferMessage | None, right: InferMessage | None) -> InferMessage | None:
    """Merge two join branches: id/parameters of the left, tensors left then right, raw left then right.

    If exactly one side carries raw contents the other is converted to raw first, so the result
    stays aligned. A None side yields the other."""
    if left is None:
        return right
    if right is None:
        return left
    if type(left) is not type(right):
        raise CodecError(f"cannot join a {type(left).__name__} with a {type(right).__name__}")
    left_tensors, left_raw = _parts(left)
    right_tensors, right_raw = _parts(right)
    if len(left_raw) and not len(right_raw):
        right = to_raw(right)
        right_tensors, right_raw = _parts(right)
    elif len(right_raw) and not len(left_raw):
        left = to_raw(left)
        left_tensors, left_raw = _parts(left)
    out = left.__class__()
    out.id = left.id
    if left.parameters:
        out.parameters.MergeFrom(left.parameters)
    out_tensors, out_raw = _parts(out)
    out_tensors.extend(left_tensors)
    out_tensors.extend(right_tensors)
    out_raw.extend(left_raw)
    out_raw.extend(right_raw)
    return out


# --------------------------------------------------------------------------- batching

def merge_batch(requests: Sequence[ModelInferRequest]) -> ModelInferRequest:
    """Concatenate requests along the first dimension (a batch step's request).

    id / model_name / model_version / parameters come from the last request; tensors are grouped
    by name in first-appearance order; shape = [sum of shape[0]] + shape[1:] of the first; tensor
    parameters are unioned (later wins); typed contents concatenated, or -- if any request has raw
    contents -- everything as raw bytes concatenated per tensor. Tensors of one name must agree on
    datatype and have at least one dimension."""
    if not requests:
        raise CodecError("merge_batch needs at least one request")
    last = requests[-1]
    out = ModelInferRequest(id=last.id, model_name=last.model_name, model_version=last.model_version)
    if last.parameters:
        out.parameters.MergeFrom(last.parameters)
    any_raw = any(len(r.raw_input_contents) for r in requests)

    groups: dict[str, list] = {}
    for position, req in enumerate(requests):
        raws = req.raw_input_contents
        n_raw = len(raws)
        for i, t in enumerate(req.inputs):
            if len(t.shape) == 0:
                raise CodecError(f"batch request {position}: tensor {t.name!r} has no dimensions to batch on")
            group = groups.get(t.name)
            if group is None:
                group = groups[t.name] = []
            elif group[0][0].datatype != t.datatype:
                raise CodecError(f"batch request {position}: tensor {t.name!r} is {t.datatype} "
                                 f"but earlier requests have {group[0][0].datatype}")
            if any_raw:
                data = raws[i] if i < n_raw else _tensor_raw_from_typed(t)
            else:
                data = None
            group.append((t, data))

    for name, members in groups.items():
        first = members[0][0]
        datatype = _check_datatype(first)
        t = out.inputs.add()
        t.name = name
        t.datatype = datatype
        t.shape.append(sum(m[0].shape[0] for m in members))
        t.shape.extend(first.shape[1:])
        for member, _ in members:
            if member.parameters:
                t.parameters.MergeFrom(member.parameters)
        if any_raw:
            out.raw_input_contents.append(b"".join(m[1] for m in members))
        else:
            field_name = CONTENTS_FIELD[datatype]
            target = getattr(t.contents, field_name)
            for member, _ in members:
                target.extend(getattr(member.contents, field_name))
    return out
