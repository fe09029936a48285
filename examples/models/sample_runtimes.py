"""MLServer custom runtimes that stand in for the models of Seldon Core 2's samples.

The reference samples run Triton (TensorFlow and Python backend) models fetched from cloud
storage; this module reproduces their tensor-level behaviour with small MLServer runtimes so the
whole demo runs offline in one MLServer process. Each model folder beside this file holds a
``model-settings.json`` whose ``implementation`` names one class below
(``sample_runtimes.<Class>``). ``mlserver start examples/models`` puts this folder on
``sys.path``, which is how every model finds the module.

This file is loaded by the MLServer subprocess only. Never import it from the dataflow
package or its tests: ``mlserver`` and ``tritonclient.grpc`` cannot share one process.

Behaviours (see examples/models/README.md for the table users read):

* ``AddSub``        INPUT0, INPUT1 (INT32 [-1,16]) -> OUTPUT0 = sum, OUTPUT1 = difference; over
                    gRPC always in ``raw_output_contents``, as Triton answers
* ``Offset``/``Scale`` INPUT (FP32) -> OUTPUT = INPUT + k / INPUT * k   (``extra.k``)
* ``Conditional``   CHOICE==0 -> only OUTPUT0 = INPUT0, else only OUTPUT1 = INPUT1
* ``RangeCheck``    OUTPUT = INPUT only when every |value| <= ``extra.limit``; else no outputs
* ``OutlierError``  OUTPUT = INPUT, or an InferenceError (HTTP 400 / gRPC INVALID_ARGUMENT)
                    when any |value| > ``extra.limit``
* ``Rename``        identity that renames tensors (``extra.rename``: {"INPUT1": "OUTPUT1"})
* ``Sum``           OUTPUT1 = INPUT1 + INPUT2 (INT64)
* ``PandasQuery``   a pandas query over the named input columns; emits the matching columns
                    (e.g. ``choice``) only when a row matches, plus a ``status`` string tensor
* ``Counter``       output = input + 1, plus an empty string tensor ``continue`` (< 10) or ``stop``
* ``Identity``      echoes every input tensor, after an optional ``extra.delay`` in seconds
"""
from __future__ import annotations

import ast
import asyncio
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput

# OIP datatype -> numpy dtype for the numeric types these samples use.
_NUMPY_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


# Models whose gRPC answers are always raw (``raw_output_contents``), as Triton's are. MLServer
# answers raw only when the request came raw, and has no setting or hook to change that per model,
# so its servicer's choice is wrapped once (``_answer_raw_for``) to also say yes for these names.
# The names live on the wrapper, not in this module: MLServer may import this file once per model
# folder, as distinct modules. Models are instantiated in MLServer's main process (no parallel
# workers, see examples/models/settings.json), where the servicer runs.
def _answer_raw_for(name: str) -> None:
    from mlserver.grpc.servicers import InferenceServicer

    chosen = InferenceServicer._GetReturnRaw
    names = getattr(chosen, "raw_output_models", None)
    if names is None:
        names = set()

        def get_return_raw(request) -> bool:
            return chosen(request) or request.model_name in names

        get_return_raw.raw_output_models = names
        InferenceServicer._GetReturnRaw = staticmethod(get_return_raw)
    names.add(name)


def datatype_name(tensor: Any) -> str:
    """The OIP datatype of a tensor as a string (MLServer may hold an enum or a plain str)."""
    return str(getattr(tensor.datatype, "value", tensor.datatype))


class SampleModel(MLModel):
    """Common plumbing: settings ``parameters.extra`` access, input lookup and output building."""

    async def load(self) -> bool:
        self.ready = True
        return self.ready

    def extra(self, key: str, default: Any = None) -> Any:
        params = self.settings.parameters
        extra = (params.extra if params is not None else None) or {}
        return extra.get(key, default)

    def find_input(self, payload: InferenceRequest, name: str) -> RequestInput:
        for request_input in payload.inputs:
            if request_input.name == name:
                return request_input
        got = [request_input.name for request_input in payload.inputs]
        raise InferenceError(f"model '{self.name}' expects input '{name}', got inputs {got}")

    def array(self, request_input: RequestInput) -> np.ndarray:
        dtype = _NUMPY_DTYPES.get(datatype_name(request_input))
        if dtype is None:
            raise InferenceError(f"model '{self.name}': input '{request_input.name}' has "
                                 f"unsupported datatype {datatype_name(request_input)}")
        data = getattr(request_input.data, "root", request_input.data)
        try:
            return np.asarray(data, dtype=dtype).reshape(request_input.shape)
        except ValueError as exc:
            raise InferenceError(f"model '{self.name}': input '{request_input.name}' data does "
                                 f"not match shape {request_input.shape}: {exc}") from exc

    @staticmethod
    def output(name: str, values: np.ndarray, datatype: str) -> ResponseOutput:
        return ResponseOutput(name=name, shape=list(values.shape), datatype=datatype,
                              data=values.flatten().tolist())

    def response(self, outputs: list[ResponseOutput]) -> InferenceResponse:
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)


class AddSub(SampleModel):
    """Triton's ``simple`` model (tfsimple1/2/3): elementwise sum and difference, INT32 [-1,16];
    gRPC answers in raw contents whatever the request used, as Triton's (the reference's recorded
    outputs of these samples carry ``raw_output_contents``)."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        _answer_raw_for(settings.name)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        left = self.find_input(payload, "INPUT0")
        right = self.find_input(payload, "INPUT1")
        for request_input in (left, right):
            shape = list(request_input.shape)
            if len(shape) != 2 or shape[1] != 16:
                got = "[" + ",".join(str(dim) for dim in shape) + "]"
                raise InferenceError(
                    f"unexpected shape for input '{request_input.name}' for model "
                    f"'{self.name}'. Expected [-1,16], got {got}")
            if datatype_name(request_input) != "INT32":
                raise InferenceError(
                    f"unexpected datatype {datatype_name(request_input)} for input "
                    f"'{request_input.name}' for model '{self.name}'. Expected INT32")
        a, b = self.array(left), self.array(right)
        if a.shape != b.shape:
            raise InferenceError(f"model '{self.name}': INPUT0 shape {list(a.shape)} differs "
                                 f"from INPUT1 shape {list(b.shape)}")
        return self.response([self.output("OUTPUT0", a + b, "INT32"),
                              self.output("OUTPUT1", a - b, "INT32")])


class _Elementwise(SampleModel):
    """INPUT (FP32) -> OUTPUT, one arithmetic operation with the constant ``extra.k``."""

    default_k = 10.0

    def apply(self, values: np.ndarray, k: float) -> np.ndarray:
        raise NotImplementedError

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        values = self.array(self.find_input(payload, "INPUT")).astype(np.float32)
        k = np.float32(self.extra("k", self.default_k))
        return self.response([self.output("OUTPUT", self.apply(values, k), "FP32")])


class Offset(_Elementwise):
    """add10: OUTPUT = INPUT + k."""

    def apply(self, values: np.ndarray, k: float) -> np.ndarray:
        return values + k


class Scale(_Elementwise):
    """mul10: OUTPUT = INPUT * k."""

    def apply(self, values: np.ndarray, k: float) -> np.ndarray:
        return values * k


class Conditional(SampleModel):
    """Routes by CHOICE: 0 -> only OUTPUT0 (= INPUT0), anything else -> only OUTPUT1 (= INPUT1).

    Only one tensor is emitted, so only one downstream branch of a pipeline fires.
    """

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        choice = self.array(self.find_input(payload, "CHOICE")).flatten()
        if choice.size == 0:
            raise InferenceError(f"model '{self.name}': CHOICE is empty")
        source, target = ("INPUT0", "OUTPUT0") if int(choice[0]) == 0 else ("INPUT1", "OUTPUT1")
        chosen = self.find_input(payload, source)
        return self.response([self.output(target, self.array(chosen), datatype_name(chosen))])


class RangeCheck(SampleModel):
    """check: emits OUTPUT (= INPUT) only when every |value| <= ``extra.limit`` (default 50).

    Used as a trigger: when the check fails the response has no tensors, so a step that is
    triggered by ``check.outputs.OUTPUT`` does not run for that request.
    """

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        request_input = self.find_input(payload, "INPUT")
        values = self.array(request_input)
        limit = float(self.extra("limit", 50))
        if values.size and float(np.max(np.abs(values.astype(np.float64)))) > limit:
            return self.response([])
        return self.response([self.output("OUTPUT", values, datatype_name(request_input))])


class OutlierError(SampleModel):
    """outlier-error: OUTPUT = INPUT, but any |value| > ``extra.limit`` (default 50) is an error.

    ``InferenceError`` reaches callers as HTTP 400 / gRPC INVALID_ARGUMENT, which is what a
    pipeline's error path must carry back to the pipeline gateway.
    """

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        request_input = self.find_input(payload, "INPUT")
        values = self.array(request_input)
        limit = float(self.extra("limit", 50))
        flat = values.astype(np.float64).flatten()
        for index, value in enumerate(flat):
            if abs(value) > limit:
                raise InferenceError(f"outlier detected by model '{self.name}': INPUT[{index}] = "
                                     f"{value:g} exceeds the limit {limit:g}")
        return self.response([self.output("OUTPUT", values, datatype_name(request_input))])


class Rename(SampleModel):
    """id1_node/id2_node: identity on selected tensors under new names (``extra.rename``)."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rename = self.extra("rename", {"INPUT1": "OUTPUT1"})
        outputs = []
        for source, target in rename.items():
            request_input = self.find_input(payload, source)
            outputs.append(ResponseOutput(name=target, shape=request_input.shape,
                                          datatype=request_input.datatype,
                                          parameters=request_input.parameters,
                                          data=request_input.data))
        return self.response(outputs)


class Sum(SampleModel):
    """join_node: OUTPUT1 = INPUT1 + INPUT2 as INT64."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        a = self.array(self.find_input(payload, "INPUT1")).astype(np.int64)
        b = self.array(self.find_input(payload, "INPUT2")).astype(np.int64)
        try:
            total = a + b
        except ValueError as exc:
            raise InferenceError(f"model '{self.name}': INPUT1 and INPUT2 do not broadcast: "
                                 f"{exc}") from exc
        return self.response([self.output("OUTPUT1", total, "INT64")])


class PandasQuery(SampleModel):
    """choice-is-one/two: run ``extra.query`` (pandas syntax, e.g. ``choice == 1``).

    The table is built from the input tensors the query names (flattened to columns of equal
    length), so other pipeline inputs of different lengths (INPUT [4]) do not get in the way.
    On a match the matching rows of those columns are emitted as tensors (so ``choice`` appears
    and can trigger a step); there is always a ``status`` string tensor saying what happened.
    """

    async def load(self) -> bool:
        query = self.extra("query")
        if not query:
            raise ValueError(f"model '{self.name}' needs parameters.extra.query")
        self.query = str(query)
        self.columns = sorted({node.id for node in ast.walk(ast.parse(self.query, mode="eval"))
                               if isinstance(node, ast.Name)})
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        import pandas as pd

        inputs = {name: self.find_input(payload, name) for name in self.columns}
        table = pd.DataFrame({name: self.array(inp).flatten() for name, inp in inputs.items()})
        try:
            matched = table.query(self.query)
        except Exception as exc:  # pandas raises many types for a bad expression
            raise InferenceError(f"model '{self.name}': query {self.query!r} failed: {exc}") from exc
        if matched.empty:
            return self.response([StringCodec.encode_output(
                "status", [f"no rows satisfied {self.query}"])])
        outputs = [self.output(name, matched[name].to_numpy(), datatype_name(inputs[name]))
                   for name in self.columns]
        outputs.append(StringCodec.encode_output(
            "status", [f"row satisfied {self.query}"] * len(matched)))
        return self.response(outputs)


class Counter(SampleModel):
    """counter (cyclic pipeline): output = first input + 1; then ``continue`` below 10, else ``stop``.

    The first input's name does not matter: the loop feeds back ``output`` while the pipeline's
    first request carries the pipeline input tensor.
    """

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if not payload.inputs:
            raise InferenceError(f"model '{self.name}' needs one integer input tensor")
        value = NumpyCodec.decode_input(payload.inputs[0]) + 1
        if value.size != 1:
            raise InferenceError(f"model '{self.name}' counts one integer; got shape "
                                 f"{list(value.shape)}")
        limit = int(self.extra("limit", 10))
        signal = "continue" if int(value.item()) < limit else "stop"
        return self.response([NumpyCodec.encode_output(name="output", payload=value),
                              StringCodec.encode_output(name=signal, payload=[""])])


class Identity(SampleModel):
    """identity / identity-loop / identity-output: echo every input after ``extra.delay`` seconds."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        delay = float(self.extra("delay", 0) or 0)
        if delay > 0:
            await asyncio.sleep(delay)
        return self.response([
            ResponseOutput(name=request_input.name, shape=request_input.shape,
                           datatype=request_input.datatype, parameters=request_input.parameters,
                           data=request_input.data)
            for request_input in payload.inputs])
