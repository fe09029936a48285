"""What the pipeline gateway says about itself and what it serves (KServe v2 server and model
metadata), shared by the REST and gRPC front ends."""
from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata as pkg_metadata

from gateways.routing import Resource

SERVER_NAME = "dataflow-pipeline-gateway"
EXTENSIONS = ["binary_tensor_data"]
PIPELINE_PLATFORM = "seldon-pipeline"
MODEL_PLATFORM = "seldon-model"


def server_version() -> str:
    try:
        return pkg_metadata.version("dataflow-engine")
    except pkg_metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


def model_metadata(resource: Resource, version: int, inputs: Sequence[dict] = (), outputs: Sequence[dict] = ()) -> dict:
    """KServe v2 model metadata of a served pipeline or model. ``inputs`` / ``outputs``: tensor
    metadata from the models' servers (``PipelineGateway.tensor_metadata``), empty when unknown."""
    return {"name": resource.name, "versions": [str(version)],
            "platform": MODEL_PLATFORM if resource.is_model else PIPELINE_PLATFORM,
            "inputs": list(inputs), "outputs": list(outputs)}
