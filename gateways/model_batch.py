"""Batching concurrent calls to one model: several ``ModelInferRequest``s as one, and back.

A model server's cost is mostly per call, not per row (MLServer's sample ``tfsimple1``: ~0.8 ms
of CPU for a [1,16] call, ~0.11 ms per row in a [8,16] call), and so is the gateway's. When the
gateway has more records for a model than free workers, it may send them as one request whose
inputs are the members' inputs stacked along the first dimension, then cut every output back
along that dimension. That is only right for a model that treats the first dimension as the batch
(Triton's ``max_batch_size > 0``). By default the gateway batches a model only when its server's
metadata says so (``declares_batch_dimension``: a variable first dimension on every input and
output, which is how Triton and MLServer describe a batch dimension). Requests that cannot be
stacked exactly (other tensor names, types or trailing shapes, BYTES tensors, parameters) and
answers that cannot be cut exactly are never forced: ``merge`` / ``split`` return None and the
caller sends the requests one by one. A batched call carries only the metadata (``x-*`` headers)
its members have in common: the server sees no per-record ``x-request-id`` for it.
"""
from __future__ import annotations

import math

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from dataflow.oip.datatypes import CONTENTS_FIELD, NUMPY_DTYPE

# Fixed-width datatype -> (numpy dtype of its raw bytes, the typed field that holds its values
# exactly; None for FP16, whose typed values travel as fp32). BYTES is never batched.
FIXED = {datatype: (dtype, None if datatype == "FP16" else CONTENTS_FIELD[datatype])
         for datatype, dtype in NUMPY_DTYPE.items() if datatype != "BYTES"}


def declares_batch_dimension(metadata: dict | None) -> bool:
    """Whether a model's KServe v2 metadata (``{"inputs": [{"shape": [...]}, ...], "outputs": ...}``)
    gives every input and output a variable first dimension (-1): the batch dimension. Unknown
    metadata, tensors without a shape, or a fixed first dimension anywhere: no."""
    if not metadata:
        return False
    tensors = [*(metadata.get("inputs") or ()), *(metadata.get("outputs") or ())]
    if not metadata.get("inputs") or not metadata.get("outputs"):
        return False
    for t in tensors:
        shape = t.get("shape") if isinstance(t, dict) else None
        if not shape or shape[0] != -1:
            return False
    return True


def _raw_of(tensor, raw: list, index: int) -> bytes | None:
    """The tensor's values as little-endian raw bytes, or None if they are not exactly its shape."""
    dt = FIXED.get(tensor.datatype)
    if dt is None or not tensor.shape:
        return None
    dtype = np.dtype(dt[0]).newbyteorder("<")
    want = math.prod(tensor.shape) * dtype.itemsize
    if raw:
        data = raw[index] if index < len(raw) else None
    elif dt[1] is not None:
        values = getattr(tensor.contents, dt[1])
        data = np.asarray(values, dtype=dtype).tobytes() if len(values) == math.prod(tensor.shape) else None
    else:
        data = None
    return data if data is not None and len(data) == want else None


def _signature(req: pb.ModelInferRequest):
    if req.parameters or any(t.parameters for t in req.inputs):
        return None
    if len(req.raw_input_contents) not in (0, len(req.inputs)):
        return None
    return (tuple((t.name, t.datatype, tuple(t.shape[1:])) for t in req.inputs),
            tuple(o.SerializeToString() for o in req.outputs))


def merge(requests: list[pb.ModelInferRequest]) -> pb.ModelInferRequest | None:
    """One request whose inputs are the members' stacked along dimension 0 (raw contents), or None."""
    first = requests[0]
    sig = _signature(first)
    if sig is None or not first.inputs or any(_signature(r) != sig for r in requests[1:]):
        return None
    out = pb.ModelInferRequest(model_name=first.model_name, model_version=first.model_version)
    out.outputs.extend(first.outputs)
    for i, t in enumerate(first.inputs):
        parts = []
        for r in requests:
            data = _raw_of(r.inputs[i], r.raw_input_contents, i)
            if data is None:
                return None
            parts.append(data)
        merged = out.inputs.add(name=t.name, datatype=t.datatype)
        merged.shape.extend([sum(r.inputs[i].shape[0] for r in requests)] + list(t.shape[1:]))
        out.raw_input_contents.append(b"".join(parts))
    return out


def rows(req: pb.ModelInferRequest) -> int:
    return req.inputs[0].shape[0]


def split(resp: pb.ModelInferResponse, requests: list[pb.ModelInferRequest]) -> list[pb.ModelInferResponse] | None:
    """The batched answer cut into one answer per member (in the encoding the server used), or None."""
    sizes = [rows(r) for r in requests]
    total = sum(sizes)
    raw = list(resp.raw_output_contents)
    if raw and len(raw) != len(resp.outputs):
        return None
    members = [pb.ModelInferResponse(model_name=resp.model_name, model_version=resp.model_version, id=r.id)
               for r in requests]
    for m in members:
        for k, v in resp.parameters.items():
            m.parameters[k].CopyFrom(v)
    for i, t in enumerate(resp.outputs):
        dt = FIXED.get(t.datatype)
        if dt is None or not t.shape or t.shape[0] != total or t.parameters:
            return None
        per_row = math.prod(t.shape[1:])
        if raw:
            itemsize = np.dtype(dt[0]).itemsize
            if len(raw[i]) != total * per_row * itemsize:
                return None
            at = 0
            for m, n in zip(members, sizes):
                size = n * per_row * itemsize
                m.raw_output_contents.append(raw[i][at:at + size])
                at += size
        else:
            if dt[1] is None:
                return None
            values = getattr(t.contents, dt[1])
            if len(values) != total * per_row:
                return None
        at = 0
        for m, n in zip(members, sizes):
            o = m.outputs.add(name=t.name, datatype=t.datatype)
            o.shape.extend([n] + list(t.shape[1:]))
            if not raw:
                assert dt[1] is not None  # typed outputs without a contents field returned above
                getattr(o.contents, dt[1]).extend(values[at:at + n * per_row])
                at += n * per_row
    return members
