"""The sample catalogue is consistent: every pipeline parses and validates, every step is a model
in examples/models.yaml, and every such model is served from examples/models (no MLServer)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler_min.convert import from_proto
from scheduler_min.manifest import models_from_yaml, pipelines_from_yaml
from scheduler_min.models import model_endpoint, resolve_endpoint
from scheduler_min.validation import validate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PIPELINE_FILES = sorted((EXAMPLES / "pipelines").glob("*.yaml"))
SERVED = {json.loads(p.read_text())["name"]: p.parent
          for p in (EXAMPLES / "models").glob("*/model-settings.json")}
MODELS = {m.meta.name: m for m in models_from_yaml((EXAMPLES / "models.yaml").read_text())}


def test_models_yaml_lists_only_served_models_with_an_endpoint():
    assert set(MODELS) <= set(SERVED)
    for model in MODELS.values():
        assert model_endpoint(resolve_endpoint(model)) == "grpc://127.0.0.1:9500"


def test_every_served_model_with_a_valid_name_is_in_models_yaml():
    assert {n for n in SERVED if "_" not in n} == set(MODELS)


def test_reference_model_names_are_served():
    reference = {"tfsimple1", "tfsimple2", "tfsimple3", "add10", "mul10", "conditional", "check",
                 "outlier-error", "id1_node", "id2_node", "join_node", "choice-is-one",
                 "choice-is-two", "counter", "identity-loop", "identity-output", "iris"}
    assert reference <= set(SERVED)


def test_iris_is_sklearn_v1():
    settings = json.loads((SERVED["iris"] / "model-settings.json").read_text())
    assert settings["implementation"] == "mlserver_sklearn.SKLearnModel"
    assert settings["parameters"]["version"] == "v1"


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=[p.stem for p in PIPELINE_FILES])
def test_sample_pipeline_is_valid_and_uses_known_models(path):
    pipelines = pipelines_from_yaml(path.read_text(), str(path))
    assert pipelines
    for pipeline in pipelines:
        validate(from_proto(pipeline))
        for step in pipeline.steps:
            assert step.name in MODELS, f"{path.name}: step {step.name} is not in models.yaml"


def test_runtime_classes_named_in_settings_exist():
    source = (EXAMPLES / "models" / "sample_runtimes.py").read_text()
    for folder in SERVED.values():
        implementation = json.loads((folder / "model-settings.json").read_text())["implementation"]
        module, _, cls = implementation.rpartition(".")
        if module == "sample_runtimes":
            assert f"class {cls}(" in source, f"{folder.name}: {implementation} missing"
