"""Models in the minimal scheduler: a name plus the Open Inference Protocol endpoint serving it.

How a user gives the endpoint (first match wins):

1. a model parameter named ``endpoint`` (``spec.parameters: [{name: endpoint, value: grpc://127.0.0.1:9500}]``,
   also written by the YAML shortcut ``spec.endpoint``);
2. ``spec.storageUri`` when its scheme is ``grpc://``, ``http://`` or ``https://``;
3. the scheduler's ``--default-model-endpoint``.

The scheduler stores the resolved endpoint as the ``endpoint`` parameter of the model definition,
so consumers of ``ModelVersionStatus.modelDefn`` (the model gateway) only ever read that parameter.
"""
from __future__ import annotations

from urllib.parse import urlparse

from chainer_api import scheduler_pb2
from scheduler_min.validation import is_valid_name

ENDPOINT_PARAMETER = "endpoint"
ENDPOINT_SCHEMES = ("grpc", "http", "https")


class ModelDefinitionError(ValueError):
    """A model the scheduler refuses (bad name, no usable endpoint)."""


def _valid_endpoint(url: str) -> bool:
    u = urlparse(url)
    return u.scheme in ENDPOINT_SCHEMES and bool(u.hostname) and u.port is not None


def model_endpoint(model: scheduler_pb2.Model) -> str | None:
    """The OIP endpoint of a model definition (e.g. ``grpc://127.0.0.1:9500``), or None."""
    for p in model.modelSpec.parameters:
        if p.name == ENDPOINT_PARAMETER and p.value:
            return p.value
    uri = model.modelSpec.uri
    if urlparse(uri).scheme in ENDPOINT_SCHEMES:
        return uri
    return None


def resolve_endpoint(model: scheduler_pb2.Model, default: str | None = None) -> scheduler_pb2.Model:
    """A copy of ``model`` whose ``endpoint`` parameter is set and valid; raises ``ModelDefinitionError``."""
    name = model.meta.name
    if not is_valid_name(name):
        raise ModelDefinitionError(
            f"model {name!r} does not have a valid name - it must be lowercase alphanumeric or '-' "
            "and cannot contain dots (.)")
    endpoint = model_endpoint(model) or default
    if not endpoint:
        raise ModelDefinitionError(
            f"model {name} has no endpoint: set spec.endpoint (or a parameter named endpoint, or a "
            f"grpc:// or http:// storageUri) to the server that serves it, e.g. grpc://127.0.0.1:9500")
    if not _valid_endpoint(endpoint):
        raise ModelDefinitionError(
            f"model {name} endpoint {endpoint!r} is invalid: expected grpc://HOST:PORT, http://HOST:PORT or https://HOST:PORT")
    out = scheduler_pb2.Model()
    out.CopyFrom(model)
    params = [p for p in out.modelSpec.parameters if p.name != ENDPOINT_PARAMETER]
    del out.modelSpec.parameters[:]
    out.modelSpec.parameters.extend(params)
    out.modelSpec.parameters.add(name=ENDPOINT_PARAMETER, value=endpoint)
    return out
