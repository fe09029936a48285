"""InferParameter <-> Python values: Seldon's messages carry bool, int64 and string parameters."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tritonclient.grpc.service_pb2 import InferParameter

from dataflow.oip.datatypes import CodecError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def make_parameter(value: Any, where: str = "parameter") -> InferParameter:
    """Python bool/int/str (or an InferParameter) -> InferParameter with Seldon's three fields."""
    p = InferParameter()
    if isinstance(value, InferParameter):
        p.CopyFrom(value)
    elif isinstance(value, (bool, np.bool_)):
        p.bool_param = bool(value)
    elif isinstance(value, (int, np.integer)):
        if not INT64_MIN <= int(value) <= INT64_MAX:
            raise CodecError(f"{where}: value {value} is out of int64 range")
        p.int64_param = int(value)
    elif isinstance(value, str):
        p.string_param = value
    else:
        raise CodecError(f"{where}: value {value!r} of type {type(value).__name__} is not bool, int or str")
    return p


def parameter_value(p: InferParameter) -> bool | int | str | float | None:
    """The Python value held by an InferParameter (None if unset)."""
    kind = p.WhichOneof("parameter_choice")
    if kind is None:
        return None
    value: bool | int | str | float = getattr(p, kind)
    return value


def set_parameters(target: Any, parameters: Mapping[str, Any] | None, where: str) -> None:
    """Write ``parameters`` (name -> bool/int/str/InferParameter) into a protobuf parameter map."""
    if not parameters:
        return
    for key, value in parameters.items():
        target[key].CopyFrom(make_parameter(value, f"{where} {key!r}"))


def parameters_dict(parameters: Any) -> dict[str, bool | int | str | float]:
    """A protobuf parameter map as name -> value, names sorted, unset parameters left out."""
    out = {}
    for key in sorted(parameters):
        value = parameter_value(parameters[key])
        if value is not None:
            out[key] = value
    return out
