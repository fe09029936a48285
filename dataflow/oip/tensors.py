"""Tensors <-> numpy, and the raw/typed rules (see the package docstring for the rules themselves).

Pure functions over ``tritonclient.grpc.service_pb2`` tensors and messages."""
from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow.oip.datatypes import (
    CONTENTS_FIELD,
    DATATYPE_BY_KIND_SIZE,
    DATATYPES,
    NUMPY_DTYPE,
    TYPED_FIELD_DTYPE,
    WIDE_DTYPE,
    CodecError,
    raw_itemsize,
)
from dataflow.oip.parameters import set_parameters

InferMessage: TypeAlias = "ModelInferRequest | ModelInferResponse"
Tensors: TypeAlias = "Mapping[str, Any] | Sequence[tuple[str, Any]]"

_LENGTH_PREFIX = struct.Struct("<I")


def parts(msg: InferMessage) -> tuple[Any, Any]:
    """(tensors, raw contents) of either message type."""
    if isinstance(msg, ModelInferRequest):
        return msg.inputs, msg.raw_input_contents
    if isinstance(msg, ModelInferResponse):
        return msg.outputs, msg.raw_output_contents
    raise CodecError(f"expected ModelInferRequest or ModelInferResponse, got {type(msg).__name__}")


# --------------------------------------------------------------------------- raw contents

def split_bytes(raw: bytes, where: str) -> list[bytes]:
    """Raw BYTES: each element is a 4-byte little-endian length then that many bytes."""
    out: list[bytes] = []
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


def join_bytes(values: Iterable[bytes]) -> bytes:
    """BYTES elements as raw contents: each one prefixed with its 4-byte little-endian length."""
    pack = _LENGTH_PREFIX.pack
    return b"".join(pack(len(v)) + v for v in values)


def _is_wide(datatype: str, size: int, count: int | None) -> bool:
    """A narrow datatype whose raw entry holds exactly ``count`` 4-byte elements (the reference's
    width). ``count`` comes from the shape; with ``count == 0`` the two widths cannot be told apart."""
    return datatype in WIDE_DTYPE and count is not None and count > 0 and size == 4 * count


def decode_raw(raw: bytes, datatype: str, count: int | None, where: str) -> np.ndarray:
    """Raw little-endian bytes -> flat array of the datatype's numpy dtype. ``count`` (elements from
    the shape; None: unknown) tells native from 4-byte elements of a narrow datatype."""
    if datatype == "BYTES":
        items = split_bytes(raw, where)
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr
    size = len(raw)
    if _is_wide(datatype, size, count):
        return _narrow(np.frombuffer(raw, dtype=WIDE_DTYPE[datatype]), datatype, "raw contents", where)
    itemsize = raw_itemsize(datatype)
    if size % itemsize:
        raise CodecError(f"{where}: raw contents of {size} bytes are not a multiple of the "
                         f"{itemsize}-byte {datatype} element size")
    if datatype == "BOOL":
        flags: np.ndarray = np.frombuffer(raw, dtype=np.uint8) != 0
        return flags
    return np.frombuffer(raw, dtype=NUMPY_DTYPE[datatype])


def raw_count(raw: bytes, datatype: str, count: int, where: str) -> int:
    """Elements in a raw entry without decoding it (BYTES: walk the length prefixes)."""
    if datatype == "BYTES":
        n, pos, end = 0, 0, len(raw)
        while pos < end:
            if end - pos < 4:
                raise CodecError(f"{where}: raw BYTES contents end with a truncated length prefix")
            pos += 4 + _LENGTH_PREFIX.unpack_from(raw, pos)[0]
            if pos > end:
                raise CodecError(f"{where}: raw BYTES element {n} overruns the data")
            n += 1
        return n
    if _is_wide(datatype, len(raw), count):
        return count
    itemsize = raw_itemsize(datatype)
    if len(raw) % itemsize:
        raise CodecError(f"{where}: raw contents of {len(raw)} bytes are not a multiple of the "
                         f"{itemsize}-byte {datatype} element size")
    return len(raw) // itemsize


def encode_raw(flat: np.ndarray, datatype: str) -> bytes:
    """A flat array as raw contents, always at the datatype's native width."""
    if datatype == "BYTES":
        return join_bytes(flat)
    return flat.astype(NUMPY_DTYPE[datatype], copy=False).tobytes()


# --------------------------------------------------------------------------- typed contents

def _narrow(wide: np.ndarray, datatype: str, source: str, where: str) -> np.ndarray:
    """Values read from a 32/64-bit carrier as the datatype's own dtype; out-of-range ints raise."""
    target = NUMPY_DTYPE[datatype]
    if target == wide.dtype:
        return wide
    if target.kind in ("i", "u") and wide.size:
        info = np.iinfo(target)
        lo, hi = wide.min(), wide.max()
        if lo < info.min or hi > info.max:
            raise CodecError(f"{where}: {source} value {lo if lo < info.min else hi} "
                             f"is out of range for {datatype}")
    return wide.astype(target)


def decode_typed(contents: Any, datatype: str, where: str) -> np.ndarray:
    """A tensor's typed contents -> flat array of the datatype's numpy dtype."""
    field_name = CONTENTS_FIELD[datatype]
    values = getattr(contents, field_name)
    if datatype == "BYTES":
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
        return arr
    return _narrow(np.array(values, dtype=TYPED_FIELD_DTYPE[field_name]), datatype, field_name, where)


def encode_typed(contents: Any, flat: np.ndarray, datatype: str) -> None:
    """Append a flat array to the typed field of ``contents`` (FP16 as fp32)."""
    field = getattr(contents, CONTENTS_FIELD[datatype])
    if datatype == "FP16":
        field.extend(flat.astype(np.float32).tolist())
    else:
        field.extend(flat.tolist())


def check_datatype(tensor: Any) -> str:
    datatype: str = tensor.datatype
    if datatype not in NUMPY_DTYPE:
        raise CodecError(f"tensor {tensor.name!r}: unknown datatype {datatype!r}; "
                         f"expected one of {', '.join(DATATYPES)}")
    return datatype


def shape_of(tensor: Any, where: str) -> tuple[int, ...]:
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise CodecError(f"{where}: shape {list(shape)} has a negative dimension")
    return shape


def typed_as_raw(tensor: Any) -> bytes:
    """One tensor's typed contents as raw bytes (no shape check: a transport conversion)."""
    datatype = check_datatype(tensor)
    return encode_raw(decode_typed(tensor.contents, datatype, f"tensor {tensor.name!r}"), datatype)


def raw_into_typed(tensor: Any, raw: bytes) -> None:
    """Replace a tensor's typed contents with its raw entry decoded."""
    datatype = check_datatype(tensor)
    where = f"tensor {tensor.name!r}"
    flat = decode_raw(bytes(raw), datatype, math.prod(shape_of(tensor, where)), where)
    tensor.ClearField("contents")
    tensor.contents.SetInParent()
    encode_typed(tensor.contents, flat, datatype)


# --------------------------------------------------------------------------- tensors -> numpy

def _fits_shape(datatype: str, shape: tuple[int, ...], count: int, got: int) -> bool:
    """``got`` elements fill the shape; BYTES may also hold one element per row (REST gateways
    store a BYTES tensor in ``shape[0]`` elements whatever the other dimensions)."""
    return got == count or (datatype == "BYTES" and len(shape) > 1 and got == shape[0])


def tensor_to_array(tensor: Any, raw: bytes | None = None) -> np.ndarray:
    """One InferInputTensor / InferOutputTensor -> numpy array shaped by ``tensor.shape``.

    ``raw`` is the tensor's ``raw_*_contents`` entry if the message carries raw contents (then typed
    contents are ignored). Raises CodecError on an unknown datatype, a raw length that is not a
    multiple of the element size, a BYTES length prefix overrunning the buffer, or an element count
    that does not match the shape."""
    where = f"tensor {tensor.name!r}"
    datatype = check_datatype(tensor)
    shape = shape_of(tensor, where)
    count = math.prod(shape)
    if raw is not None:
        flat = decode_raw(bytes(raw), datatype, count, where)
    else:
        flat = decode_typed(tensor.contents, datatype, where)
    if flat.shape[0] != count:
        if _fits_shape(datatype, shape, count, flat.shape[0]):
            return flat  # REST-style BYTES: one element per row
        source = "raw contents" if raw is not None else f"{CONTENTS_FIELD[datatype]}"
        raise CodecError(f"{where}: {source} hold {flat.shape[0]} {datatype} elements "
                         f"but shape {list(shape)} needs {count}")
    return flat.reshape(shape)


def check_tensors(msg: InferMessage) -> None:
    """Raise CodecError unless every tensor's contents fill its shape, the way ``tensor_to_array``
    would read them, without building any array: counts are compared, the claimed
    ``product(shape)`` is only multiplied. For a front door that must refuse a small message
    claiming a huge shape before it costs memory."""
    tensors, raws = parts(msg)
    if len(raws) > len(tensors):
        raise CodecError(f"{len(raws)} raw contents for {len(tensors)} tensors")
    for i, t in enumerate(tensors):
        where = f"tensor {t.name!r}"
        datatype = check_datatype(t)
        shape = shape_of(t, where)
        count = math.prod(shape)
        if i < len(raws):
            got, source = raw_count(raws[i], datatype, count, where), "raw contents"
        else:
            got, source = len(getattr(t.contents, CONTENTS_FIELD[datatype])), CONTENTS_FIELD[datatype]
        if not _fits_shape(datatype, shape, count, got):
            raise CodecError(f"{where}: {source} hold {got} {datatype} elements but shape {list(shape)} needs {count}")


def _tensors(tensors: Any, raws: Any) -> list[tuple[str, np.ndarray]]:
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


# --------------------------------------------------------------------------- numpy -> tensors

def datatype_of(array: Any) -> str:
    """The OIP datatype for a numpy array (object / bytes / str arrays are BYTES)."""
    dtype = np.asarray(array).dtype if not isinstance(array, np.ndarray) else array.dtype
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return DATATYPE_BY_KIND_SIZE[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise CodecError(f"numpy dtype {dtype} has no OIP datatype") from None


def _as_bytes(value: Any, where: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, np.str_)):
        return str(value).encode("utf-8")
    raise CodecError(f"{where}: BYTES element {value!r} is not bytes or str")


def _looks_like_bytes(value: Any) -> bool:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return isinstance(value, (bytes, bytearray, str))


def _to_ndarray(value: Any, datatype: str | None, where: str) -> np.ndarray:
    """Coerce user input to an array without numpy's fixed-width bytes truncation for BYTES."""
    if isinstance(value, np.ndarray):
        return value
    if datatype == "BYTES" or _looks_like_bytes(value):
        return np.array(value, dtype=object)
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{where}: cannot make an array from {type(value).__name__}: {exc}") from exc


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


def _fill(msg: InferMessage, tensors: Tensors, *, id: str, parameters: Mapping[str, Any] | None, raw: bool,
          datatypes: Mapping[str, str] | None,
          tensor_parameters: Mapping[str, Mapping[str, Any]] | None) -> None:
    msg.id = id
    set_parameters(msg.parameters, parameters, "message parameter")
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    out_tensors, out_raw = parts(msg)
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
            set_parameters(t.parameters, tensor_parameters[name], f"{where} parameter")
        if raw:
            out_raw.append(encode_raw(flat, datatype))
        else:
            encode_typed(t.contents, flat, datatype)


def make_request(tensors: Tensors, *, id: str = "", parameters: Mapping[str, Any] | None = None,
                 raw: bool = False, datatypes: Mapping[str, str] | None = None,
                 tensor_parameters: Mapping[str, Mapping[str, Any]] | None = None) -> ModelInferRequest:
    """Build a ModelInferRequest from named arrays (typed contents, or raw_input_contents if ``raw``).

    ``datatypes`` overrides the inferred datatype per tensor name; ``parameters`` values are
    bool/int/str (or InferParameter)."""
    msg = ModelInferRequest()
    _fill(msg, tensors, id=id, parameters=parameters, raw=raw, datatypes=datatypes,
          tensor_parameters=tensor_parameters)
    return msg


def make_response(tensors: Tensors, *, id: str = "", parameters: Mapping[str, Any] | None = None,
                  raw: bool = False, datatypes: Mapping[str, str] | None = None,
                  tensor_parameters: Mapping[str, Mapping[str, Any]] | None = None,
                  model_name: str = "", model_version: str = "") -> ModelInferResponse:
    """Build a ModelInferResponse from named arrays (typed contents, or raw_output_contents if ``raw``)."""
    msg = ModelInferResponse(model_name=model_name, model_version=model_version)
    _fill(msg, tensors, id=id, parameters=parameters, raw=raw, datatypes=datatypes,
          tensor_parameters=tensor_parameters)
    return msg


# --------------------------------------------------------------------------- typed <-> raw

def _copy(msg: InferMessage) -> InferMessage:
    out = msg.__class__()
    out.CopyFrom(msg)
    return out


def to_raw(msg: InferMessage) -> InferMessage:
    """A copy with every tensor's data in ``raw_*_contents`` and typed contents cleared.

    Tensors that already have a raw entry keep it; the others are encoded from typed contents.
    The input message is not modified."""
    tensors, raws = parts(msg)
    n_raw = len(raws)
    out = _copy(msg)
    out_tensors, out_raw = parts(out)
    new_raw = [raws[i] if i < n_raw else typed_as_raw(t) for i, t in enumerate(tensors)]
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
    out_tensors, out_raw = parts(out)
    for i in range(min(len(out_raw), len(out_tensors))):
        t = out_tensors[i]
        datatype = check_datatype(t)
        where = f"tensor {t.name!r}"
        flat = decode_raw(out_raw[i], datatype, math.prod(shape_of(t, where)), where)
        t.ClearField("contents")
        encode_typed(t.contents, flat, datatype)
    del out_raw[:]
    return out
