"""``pipeline_message`` is the scheduler's conversion: same messages, same validation."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dataflow.kafka import TopicNamer
from dataflow.topology import build_topology
from scheduler_min.convert import creation_message, from_proto, pipeline_message
from scheduler_min.manifest import pipeline_from_manifest
from scheduler_min.validation import PipelineValidationError

EXAMPLES = sorted((Path(__file__).resolve().parents[4] / "examples" / "pipelines").glob("*.yaml"))
NAMER = TopicNamer(prefix="t", namespace="ns")


def example_manifests():
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Pipeline":
                yield pytest.param(doc, id=path.stem)


def test_examples_exist():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("doc", list(example_manifests()))
def test_every_example_converts_like_the_scheduler_and_compiles(doc):
    msg = pipeline_message(doc, version=4, uid="u1", namer=NAMER, timestamp=9)
    expected = creation_message(from_proto(pipeline_from_manifest(doc), version=4, uid="u1"), NAMER, timestamp=9)
    assert msg == expected
    topo = build_topology(msg)
    assert topo.output_topic == NAMER.pipeline_outputs(doc["metadata"]["name"])


def test_bare_spec_and_full_manifest_give_the_same_message():
    spec = {"steps": [{"name": "a"}, {"name": "b", "inputs": ["a.outputs.OUTPUT0"]}], "output": {"steps": ["b"]}}
    bare = pipeline_message({"name": "p", **spec}, uid="u")
    full = pipeline_message({"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline",
                             "metadata": {"name": "p"}, "spec": spec}, uid="u")
    no_kind = pipeline_message({"metadata": {"name": "p"}, "spec": spec}, uid="u")
    name_in_spec = pipeline_message({"spec": {"name": "p", **spec}}, uid="u")
    assert bare == full == no_kind == name_in_spec
    assert (bare.pipeline, bare.version, bare.uid) == ("p", 1, "u")


def test_missing_uid_gets_a_fresh_one():
    a, b = (pipeline_message({"name": "p", "steps": [{"name": "m"}]}) for _ in range(2))
    assert a.uid and b.uid and a.uid != b.uid


@pytest.mark.parametrize("spec, reason", [
    ({"name": "p", "steps": [{"name": "m", "inputs": ["nope"]}]}, "step that does not exist"),
    ({"name": "p", "steps": [{"name": "m", "input": ["p"]}]}, 'unknown field "input"'),
    ({"name": "p", "steps": []}, "has no steps"),
])
def test_specs_the_scheduler_refuses_are_refused(spec, reason):
    with pytest.raises(PipelineValidationError, match=reason):
        pipeline_message(spec)
