"""The OIP datatypes: which protobuf field carries each one's typed values, its numpy dtype, its
raw element width, and the range its typed field can hold. Every other module reads this table."""
from __future__ import annotations

import numpy as np

DATATYPES: tuple[str, ...] = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
    "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES",
)

# Which InferTensorContents field holds each datatype's typed values (narrow types share the
# 32-bit field; FP16 travels as fp32 because protobuf has no half field).
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

# The numpy dtype a datatype decodes to (little-endian, as in raw contents).
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

# The 4-byte element the reference's converters use for a narrow datatype in raw contents (they
# copy the 32-bit typed field as it is). Read as a fallback; never written.
WIDE_DTYPE: dict[str, np.dtype] = {
    "UINT8": np.dtype("<u4"),
    "UINT16": np.dtype("<u4"),
    "INT8": np.dtype("<i4"),
    "INT16": np.dtype("<i4"),
    "FP16": np.dtype("<f4"),
}

# numpy dtype of the protobuf repeated field that carries typed values.
TYPED_FIELD_DTYPE: dict[str, np.dtype] = {
    "bool_contents": np.dtype(np.bool_),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}

# The values an integer datatype's typed field can hold (narrow types travel in 32-bit fields).
TYPED_FIELD_RANGE: dict[str, tuple[int, int]] = {
    "UINT8": (0, 2**32 - 1), "UINT16": (0, 2**32 - 1), "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**31), 2**31 - 1), "INT16": (-(2**31), 2**31 - 1), "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}

DATATYPE_BY_KIND_SIZE: dict[tuple[str, int], str] = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8", ("u", 2): "UINT16", ("u", 4): "UINT32", ("u", 8): "UINT64",
    ("i", 1): "INT8", ("i", 2): "INT16", ("i", 4): "INT32", ("i", 8): "INT64",
    ("f", 2): "FP16", ("f", 4): "FP32", ("f", 8): "FP64",
}


class CodecError(ValueError):
    """Bytes or tensors that cannot be decoded/encoded; the message names the tensor and the numbers."""


def raw_itemsize(datatype: str) -> int:
    """Bytes per element of a fixed-width datatype in raw contents (BOOL: one byte)."""
    return 1 if datatype == "BOOL" else NUMPY_DTYPE[datatype].itemsize
