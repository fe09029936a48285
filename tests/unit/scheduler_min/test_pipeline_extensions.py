"""Our Pipeline YAML extensions, ``batch.rolling`` and step-level ``passEmptyResponses``: carried from
the YAML through the scheduler proto (PipelineStatus, saved state) to the Chainer step update."""
import re

import pytest

from chainer_api import scheduler_pb2
from dataflow.kafka import TopicNamer
from scheduler_min import convert
from scheduler_min.manifest import ManifestError
from scheduler_min.validation import PipelineValidationError

NAMER = TopicNamer()

PIPE = """
kind: Pipeline
metadata: {{name: p}}
spec:
  steps:
    - name: a
{a}
    - name: b
      inputs: [a]
  output:
    steps: [b]
"""


def pipeline(a: str = "") -> str:
    return PIPE.format(a="\n".join("      " + line for line in a.splitlines()))


def creation(text):
    pv = convert.from_proto(convert.pipelines_from_yaml(text)[0], version=1, uid="u1")
    return pv, convert.creation_message(pv, NAMER)


def test_defaults_are_off():
    pv, msg = creation(pipeline())
    a, b = msg.updates[0], msg.updates[1]
    assert not a.passEmptyResponses and not b.passEmptyResponses
    assert not a.HasField("batch")
    assert not pv.steps["a"].pass_empty_responses and not pv.steps["a"].batch_rolling


def test_rolling_batch_reaches_the_chainer_update():
    _pv, msg = creation(pipeline("batch: {size: 3, rolling: true}"))
    a = msg.updates[0]
    assert (a.batch.size, a.batch.HasField("windowMs"), a.batch.rolling) == (3, False, True)
    assert not msg.updates[1].HasField("batch")


def test_pass_empty_responses_reaches_the_chainer_update():
    _, msg = creation(pipeline("passEmptyResponses: true"))
    assert msg.updates[0].passEmptyResponses is True
    assert msg.updates[1].passEmptyResponses is False
    # only steps carry it: the input, output and error steps never pass empty messages
    assert [u.passEmptyResponses for u in msg.updates[2:]] == [False, False]


def test_extensions_survive_the_scheduler_proto_round_trip():
    """PipelineStatus shows them, and the saved state (to_proto -> bytes -> from_proto) keeps them."""
    pv, _ = creation(pipeline("passEmptyResponses: true\nbatch: {size: 2, windowMs: 50, rolling: true}"))
    proto = convert.to_proto(pv)
    step = proto.steps[0]
    assert step.passEmptyResponses and step.batch.rolling and step.batch.size == 2
    again = convert.from_proto(scheduler_pb2.Pipeline.FromString(proto.SerializeToString()))
    assert again.steps["a"].pass_empty_responses and again.steps["a"].batch_rolling
    assert again.steps["a"].batch_window_ms == 50


def test_manifest_sets_the_scheduler_proto_fields():
    (p,) = convert.pipelines_from_yaml(pipeline("passEmptyResponses: true\nbatch: {size: 4, rolling: true}"))
    assert p.steps[0].passEmptyResponses and p.steps[0].batch.rolling
    assert not p.steps[1].passEmptyResponses


def test_rolling_without_size_is_refused_by_the_scheduler():
    with pytest.raises(PipelineValidationError, match=r"step a: batch\.rolling needs batch\.size"):
        creation(pipeline("batch: {windowMs: 100, rolling: true}"))


@pytest.mark.parametrize("step,message", [
    ("passEmptyResponses: yes please", "spec.steps[0].passEmptyResponses of p must be true or false"),
    ("passEmptyResponses: 1", "spec.steps[0].passEmptyResponses of p must be true or false, got 1"),
    ("batch: {size: 2, rolling: sometimes}", "spec.steps[0].batch.rolling of p must be true or false"),
])
def test_wrong_types_are_refused(step, message):
    with pytest.raises(ManifestError, match=re.escape(message)):
        convert.pipelines_from_yaml(pipeline(step))
