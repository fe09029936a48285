"""The Open Inference Protocol (OIP, KServe v2) in one place: every hop of the dataflow, both
gateways, batch scoring and the test driver read and write tensors through this package.

Modules: ``datatypes`` (the one datatype table), ``tensors`` (tensors <-> numpy, raw/typed
rules), ``parameters`` (InferParameter <-> Python values), ``messages`` (record bytes <->
messages), ``convert`` (message -> message: step converters, response used as a request, joins,
batches) and ``json`` (REST JSON and the binary tensor extension <-> protobuf). The binary-side
names are re-exported here; the JSON side is used as ``dataflow.oip.json``.

Messages are ``tritonclient.grpc.service_pb2`` ``ModelInferRequest`` / ``ModelInferResponse``,
field-for-field the messages Seldon writes to Kafka.

The raw-contents rule (the same for reading and writing, engine and gateways)
-----------------------------------------------------------------------------
* Alignment: ``raw_*_contents[i]`` belongs to tensor ``i``, as Triton and MLServer read it and
  as Seldon's dataflow copies it. A tensor without a raw entry (fewer entries than tensors) keeps
  its typed contents; a message with more entries than tensors is refused where messages are
  checked (``check_tensors``, REST output). (Seldon's REST gateway instead gives
  the entries to the tensors *without* typed contents, in order; the two agree on every message
  the protocol allows, where raw contents are given for all tensors or none.)
* Widths written: always the datatype's native little-endian width -- BOOL 1 byte, INT8/UINT8 1,
  INT16/UINT16/FP16 2 (IEEE half) -- what Triton and MLServer send and expect. BYTES elements are
  each prefixed with their 4-byte little-endian length.
* Widths read: the native width, or, for the narrow datatypes UINT8, UINT16, INT8, INT16 and FP16,
  4-byte elements when the entry is exactly 4 bytes times the shape's element count (Seldon's
  converters copy the 32-bit typed field as it is). The two can only coincide for an empty tensor,
  which is read at the native width. 4-byte integers out of the datatype's range are an error.
* When a message has raw contents, a step converter drops the typed contents of every tensor it
  copies and copies the raw entries by index.

Other decisions
---------------
* Empty bytes parse to an empty message: protobuf serialises an all-default message to ``b""``,
  so it is a legitimate value; callers drop it with :func:`has_tensors`. ``None`` (a tombstone)
  and undecodable bytes raise :class:`CodecError`.
* Typed FP16 travels in ``fp32_contents`` (there is no half field).
* BYTES arrays are numpy object arrays of ``bytes``; ``str`` elements are UTF-8 encoded on the way
  in. Because REST gateways store a BYTES tensor in ``shape[0]`` elements whatever the other
  dimensions, a BYTES tensor whose element count equals ``shape[0]`` but not the full product
  decodes to a 1-D array of ``shape[0]`` elements instead of failing.
"""
from __future__ import annotations

from dataflow.oip.convert import (
    convert_to_request,
    convert_to_response,
    filter_request,
    filter_response,
    has_tensors,
    join_values,
    merge_batch,
    response_as_request,
)
from dataflow.oip.datatypes import CONTENTS_FIELD, DATATYPES, NUMPY_DTYPE, CodecError
from dataflow.oip.messages import parse_request, parse_response, strip_schema_prefix
from dataflow.oip.parameters import make_parameter, parameter_value
from dataflow.oip.tensors import (
    InferMessage,
    check_tensors,
    datatype_of,
    make_request,
    make_response,
    request_arrays,
    request_tensors,
    response_arrays,
    response_tensors,
    tensor_to_array,
    to_raw,
    to_typed,
)

__all__ = [
    "CONTENTS_FIELD",
    "DATATYPES",
    "NUMPY_DTYPE",
    "CodecError",
    "InferMessage",
    "check_tensors",
    "convert_to_request",
    "convert_to_response",
    "datatype_of",
    "filter_request",
    "filter_response",
    "has_tensors",
    "join_values",
    "make_parameter",
    "make_request",
    "make_response",
    "merge_batch",
    "parameter_value",
    "parse_request",
    "parse_response",
    "request_arrays",
    "request_tensors",
    "response_arrays",
    "response_as_request",
    "response_tensors",
    "strip_schema_prefix",
    "tensor_to_array",
    "to_raw",
    "to_typed",
]
