"""Message -> message conversions: the four step converters (with tensor selection and renaming),
a response used as a model's request, join merges and batch merges.

These sit on the engine's hot path: they copy protobuf fields and raw entries directly and touch
numpy only where a typed <-> raw conversion is needed."""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from tritonclient.grpc.service_pb2 import ModelInferRequest, ModelInferResponse

from dataflow.oip.datatypes import CONTENTS_FIELD, CodecError
from dataflow.oip.tensors import (
    InferMessage,
    check_datatype,
    parts,
    to_raw,
    typed_as_raw,
)

_Out = TypeVar("_Out", ModelInferRequest, ModelInferResponse)


def _select(src: InferMessage, dst: _Out, tensors: Collection[str] | None,
            renames: Mapping[str, str] | None) -> _Out:
    """The step converters' common rule: the new message carries the source's id and parameters
    and the selected (renamed) tensors; when the source has raw contents, each kept tensor's typed
    contents are dropped and its raw entry (by index) copied."""
    src_tensors, src_raw = parts(src)
    dst_tensors, dst_raw = parts(dst)
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


def response_as_request(resp: ModelInferResponse) -> ModelInferRequest:
    """A response handed to a model as its request (the model gateway accepts either): outputs
    become inputs and everything else is kept as it is -- model name and version, id, parameters,
    typed and raw contents."""
    req = ModelInferRequest(model_name=resp.model_name, model_version=resp.model_version, id=resp.id)
    if resp.parameters:
        req.parameters.MergeFrom(resp.parameters)
    for t in resp.outputs:  # InferOutputTensor and InferInputTensor share field numbers 1-5
        req.inputs.add().MergeFromString(t.SerializeToString())
    req.raw_input_contents.extend(resp.raw_output_contents)
    return req


def has_tensors(msg: InferMessage | None) -> bool:
    """False for results the dataflow drops: no inputs (request) / no outputs (response)."""
    if msg is None:
        return False
    return len(parts(msg)[0]) > 0


def join_values(left: _Out | None, right: _Out | None) -> _Out | None:
    """Merge two join branches: id/parameters of the left, tensors left then right, raw left then right.

    If exactly one side carries raw contents the other is converted to raw first, so the result
    stays aligned. A None side yields the other."""
    if left is None:
        return right
    if right is None:
        return left
    if type(left) is not type(right):
        raise CodecError(f"cannot join a {type(left).__name__} with a {type(right).__name__}")
    left_tensors, left_raw = parts(left)
    right_tensors, right_raw = parts(right)
    if len(left_raw) and not len(right_raw):
        right_tensors, right_raw = parts(to_raw(right))
    elif len(right_raw) and not len(left_raw):
        left_tensors, left_raw = parts(to_raw(left))
    out = left.__class__()
    out.id = left.id
    if left.parameters:
        out.parameters.MergeFrom(left.parameters)
    out_tensors, out_raw = parts(out)
    out_tensors.extend(left_tensors)
    out_tensors.extend(right_tensors)
    out_raw.extend(left_raw)
    out_raw.extend(right_raw)
    return out


def merge_batch(requests: Sequence[ModelInferRequest]) -> ModelInferRequest:
    """Concatenate requests along the first dimension.

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

    groups: dict[str, list[tuple[Any, bytes | None]]] = {}
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
                data: bytes | None = raws[i] if i < n_raw else typed_as_raw(t)
            else:
                data = None
            group.append((t, data))

    for name, members in groups.items():
        first = members[0][0]
        datatype = check_datatype(first)
        t = out.inputs.add()
        t.name = name
        t.datatype = datatype
        t.shape.append(sum(m[0].shape[0] for m in members))
        t.shape.extend(first.shape[1:])
        for member, _ in members:
            if member.parameters:
                t.parameters.MergeFrom(member.parameters)
        if any_raw:
            out.raw_input_contents.append(b"".join(m[1] or b"" for m in members))
        else:
            field_name = CONTENTS_FIELD[datatype]
            target = getattr(t.contents, field_name)
            for member, _ in members:
                target.extend(getattr(member.contents, field_name))
    return out
