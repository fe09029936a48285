"""Client side of the data plane used by the CLI: one inference call to the pipeline gateway.

REST: ``POST /v2/models/<name>/infer`` with ``seldon-model: <name>.pipeline`` (pipelines) or
``<name>`` (models), like the seldon CLI. gRPC: ``ModelInfer`` with the same ``seldon-model``
metadata; the JSON request is converted with ``dataflow.oip.json`` and the answer converted back to OIP
JSON so both modes print the same shape.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dataflow import headers as H
from dataflow.oip import json as oip_json


class InferCallError(RuntimeError):
    """The call failed; the message carries the status and the gateway's error text."""


@dataclass
class InferReply:
    body: dict
    headers: list[tuple[str, str]]


def seldon_model_header(name: str, is_pipeline: bool) -> str:
    return f"{name}.pipeline" if is_pipeline else name


def infer_rest(host: str, name: str, body: bytes, *, is_pipeline: bool, headers: dict | None = None,
               timeout_s: float = 60.0) -> InferReply:
    base = host if host.startswith(("http://", "https://")) else f"http://{host}"
    url = f"{base}/v2/models/{name}/infer"
    send = {"Content-Type": "application/json", H.SELDON_MODEL: seldon_model_header(name, is_pipeline)}
    send.update(headers or {})
    req = urllib.request.Request(url, data=body, method="POST", headers=send)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            payload = r.read()
            reply_headers = list(r.headers.items())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        raise InferCallError(f"HTTP {exc.code} from {url}" + (f": {text}" if text else "")) from None
    except (urllib.error.URLError, OSError) as exc:
        raise InferCallError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    try:
        return InferReply(json.loads(payload), reply_headers)
    except ValueError:
        raise InferCallError(f"{url} answered with non-JSON: {payload[:200]!r}") from None


def infer_grpc(host: str, name: str, body: bytes, *, is_pipeline: bool, headers: dict | None = None,
               timeout_s: float = 60.0) -> InferReply:
    target = host.split("://", 1)[-1]
    try:
        request = oip_json.request_from_json(body, model_name=name)
    except oip_json.OipJsonError as exc:
        raise InferCallError(f"bad request: {exc}") from None
    md = [(H.SELDON_MODEL, seldon_model_header(name, is_pipeline))]
    md += [(k.lower(), v) for k, v in (headers or {}).items()]
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            resp, call = stub.ModelInfer.with_call(request, metadata=md, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise InferCallError(f"gRPC {exc.code().name} from {target}: {exc.details()}") from None
        return InferReply(oip_json.response_to_json(resp), list(call.initial_metadata() or ()))
