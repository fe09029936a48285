"""Pipeline YAML -> scheduler proto -> Chainer messages (worked examples of the reference scheduler)."""
import pytest

from chainer_api import chainer_pb2, scheduler_pb2
from dataflow.kafka import TopicNamer
from scheduler_min import convert
from scheduler_min.ids import is_uid, new_uid
from tests.manifests import TFSIMPLES

NAMER = TopicNamer()


EXTENDED_STEP = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: tfsimple-extended-step
spec:
  input:
    externalInputs:
      - tfsimple.step.tfsimple1.outputs
    tensorMap:
      tfsimple.step.tfsimple1.outputs.OUTPUT0: INPUT0
      tfsimple.step.tfsimple1.outputs.OUTPUT1: INPUT1
  steps:
    - name: tfsimple2
  output:
    steps:
    - tfsimple2
"""


def load(text, **kw):
    return convert.from_proto(convert.pipelines_from_yaml(text)[0], **kw)


def topics(ts):
    return [(t.pipelineName, t.topicName, t.tensor if t.HasField("tensor") else None) for t in ts]


def tmap(ms):
    return sorted((m.pipelineName, m.topicAndTensor, m.tensorName) for m in ms)


def test_tfsimples_create_message_matches_spec_example():
    pv = load(TFSIMPLES, version=1, uid="abc")
    msg = convert.creation_message(pv, NAMER, timestamp=7)
    assert (msg.op, msg.pipeline, msg.version, msg.uid, msg.timestamp) == (
        chainer_pb2.PipelineUpdateMessage.Create, "tfsimples", 1, "abc", 7)
    assert msg.pipelineOutputTopic == "seldon.default.pipeline.tfsimples.outputs"
    assert msg.pipelineErrorTopic == "seldon.default.errors.errors"
    assert msg.stream == ""
    s1, s2, out, err = msg.updates
    assert topics(s1.sources) == [("tfsimples", "seldon.default.pipeline.tfsimples.inputs", None)]
    assert s1.sink.topicName == "seldon.default.model.tfsimple1.inputs"
    assert (s1.inputJoinTy, s1.triggersJoinTy) == (chainer_pb2.PipelineStepUpdate.Inner,) * 2
    assert not s1.HasField("joinWindowMs") and not s1.HasField("batch")
    assert topics(s2.sources) == [("tfsimples", "seldon.default.model.tfsimple1.outputs", None)]
    assert s2.sink.topicName == "seldon.default.model.tfsimple2.inputs"
    assert tmap(s2.tensorMap) == [
        ("tfsimples", "seldon.default.model.tfsimple1.outputs.OUTPUT0", "INPUT0"),
        ("tfsimples", "seldon.default.model.tfsimple1.outputs.OUTPUT1", "INPUT1")]
    assert topics(out.sources) == [("tfsimples", "seldon.default.model.tfsimple2.outputs", None)]
    assert out.sink.topicName == "seldon.default.pipeline.tfsimples.outputs"
    assert out.HasField("joinWindowMs") and out.joinWindowMs == 0
    assert out.inputJoinTy == chainer_pb2.PipelineStepUpdate.Inner
    assert out.triggersJoinTy == chainer_pb2.PipelineStepUpdate.Unknown
    assert topics(err.sources) == [("tfsimples", "seldon.default.errors.errors", None)]
    assert err.sink.topicName == "seldon.default.pipeline.tfsimples.outputs"
    assert not err.HasField("joinWindowMs")


def test_extended_step_input_update():
    pv = load(EXTENDED_STEP, version=1)
    msg = convert.creation_message(pv, NAMER)
    assert len(msg.updates) == 4  # step, input, output, error
    inp = msg.updates[1]
    assert topics(inp.sources) == [("tfsimple", "seldon.default.model.tfsimple1.outputs", None)]
    assert inp.sink == chainer_pb2.PipelineTopic(
        pipelineName="tfsimple-extended-step", topicName="seldon.default.pipeline.tfsimple-extended-step.inputs")
    assert tmap(inp.tensorMap) == [
        ("tfsimple", "seldon.default.model.tfsimple1.outputs.OUTPUT0", "INPUT0"),
        ("tfsimple", "seldon.default.model.tfsimple1.outputs.OUTPUT1", "INPUT1")]
    assert msg.updates[-1].sources[0].topicName == "seldon.default.errors.errors"


@pytest.mark.parametrize("ref,expected", [
    ("foo", ("foo", "seldon.default.pipeline.foo.outputs", None)),
    ("foo.inputs", ("foo", "seldon.default.pipeline.foo.inputs", None)),
    ("foo.outputs.t1", ("foo", "seldon.default.pipeline.foo.outputs", "t1")),
    ("foo.step.bar", ("foo", "seldon.default.model.bar.outputs", None)),
    ("foo.step.bar.inputs.tensora", ("foo", "seldon.default.model.bar.inputs", "tensora")),
])
def test_external_input_sources(ref, expected):
    refs = convert.normalise_external_refs([ref])
    assert topics(convert.external_sources(NAMER, refs)) == [expected]


def test_input_tensor_map_three_and_five_parts_and_other_shapes():
    got = tmap(convert.qualified_input_tensor_map(NAMER, {
        "q.outputs.T": "A", "q.step.s.inputs.U": "B", "q.weird": "C"}))
    assert got == [("q", "", "C"), ("q", "seldon.default.model.s.inputs.U", "B"),
                   ("q", "seldon.default.pipeline.q.outputs.T", "A")]


def test_normalisation_of_internal_references():
    assert convert.normalise_internal_refs("p", ["m", "p", "m.inputs", "p.inputs.T", "m.outputs.X"]) == [
        "m.outputs", "p.inputs", "m.inputs", "p.inputs.T", "m.outputs.X"]


def test_pipeline_input_tensor_refs_resolve_to_pipeline_topic():
    text = """
kind: Pipeline
metadata: {name: p}
spec:
  steps:
    - name: a
      inputs: [p.inputs.INPUT]
      triggers: [p.inputs.ok]
      tensorMap: {p.inputs.INPUT: X}
"""
    msg = convert.creation_message(load(text, version=1), NAMER)
    step = msg.updates[0]
    assert topics(step.sources) == [("p", "seldon.default.pipeline.p.inputs", "INPUT")]
    assert topics(step.triggers) == [("p", "seldon.default.pipeline.p.inputs", "ok")]
    assert tmap(step.tensorMap) == [("p", "seldon.default.pipeline.p.inputs.INPUT", "X")]
    # no output section: no output step, error step still last
    assert len(msg.updates) == 2
    assert msg.updates[1].sources[0].topicName == "seldon.default.errors.errors"


@pytest.mark.parametrize("word,chainer", [("inner", 1), ("outer", 2), ("any", 3), (None, 1)])
def test_join_enum_mapping(word, chainer):
    jt = f"inputsJoinType: {word}\n      triggersJoinType: {word}" if word else ""
    ow = f"stepsJoin: {word}" if word else ""
    text = f"""
kind: Pipeline
metadata: {{name: p}}
spec:
  input:
    externalInputs: [q]
    {'joinType: ' + word if word else ''}
    {'triggersJoinType: ' + word if word else ''}
  steps:
    - name: a
      {jt}
  output:
    steps: [a]
    {ow}
"""
    msg = convert.creation_message(load(text, version=1), NAMER)
    step, inp, out, _ = msg.updates
    assert (step.inputJoinTy, step.triggersJoinTy) == (chainer, chainer)
    assert (inp.inputJoinTy, inp.triggersJoinTy) == (chainer, chainer)
    assert out.inputJoinTy == chainer


def test_batch_window_cycles_and_settings():
    text = """
kind: Pipeline
metadata: {name: p}
spec:
  allowCycles: true
  maxStepRevisits: 5
  steps:
    - name: a
      inputs: [p, b]
      joinWindowMs: 250
      batch: {size: 10, windowMs: 500, rolling: true}
    - name: b
      inputs: [a]
  output:
    steps: [b.outputs.OUT]
    joinWindowMs: 99
"""
    msg = convert.creation_message(load(text, version=3), NAMER)
    a = msg.updates[0]
    assert a.joinWindowMs == 250
    assert (a.batch.size, a.batch.windowMs, a.batch.rolling) == (10, 500, True)
    assert msg.allowCycles and msg.maxStepRevisits == 5
    out = msg.updates[2]
    assert topics(out.sources) == [("p", "seldon.default.model.b.outputs", "OUT")]
    assert out.joinWindowMs == 99


def test_topic_prefix_and_namespace():
    namer = TopicNamer(prefix="acme", namespace="prod")
    msg = convert.creation_message(load(TFSIMPLES, version=1), namer)
    assert msg.updates[0].sources[0].topicName == "acme.prod.pipeline.tfsimples.inputs"
    assert msg.pipelineErrorTopic == "acme.prod.errors.errors"


def test_delete_message_keeps_topics_unless_clean_on_delete():
    pv = load(TFSIMPLES, version=2, uid="u1")
    msg = convert.deletion_message(pv, NAMER, keep_topics=False, timestamp=4)
    assert (msg.op, msg.pipeline, msg.version, msg.uid, msg.timestamp) == (
        chainer_pb2.PipelineUpdateMessage.Delete, "tfsimples", 2, "u1", 4)
    assert len(msg.updates) == 0
    pv.clean_topics_on_delete = True
    assert len(convert.deletion_message(pv, NAMER, keep_topics=True).updates) == 0
    (u,) = convert.deletion_message(pv, NAMER, keep_topics=False).updates
    assert topics(u.sources) == [("tfsimples", "seldon.default.pipeline.tfsimples.inputs", None)]
    assert u.sink.topicName == "seldon.default.pipeline.tfsimples.outputs"


def test_clean_topics_on_delete_from_yaml():
    pv = load(TFSIMPLES.replace("spec:\n", "spec:\n  dataflow:\n    cleanTopicsOnDelete: true\n", 1), version=1)
    assert pv.clean_topics_on_delete


def test_to_proto_round_trip_is_normalised():
    pv = load(EXTENDED_STEP, version=4, uid="x")
    p = convert.to_proto(pv)
    assert p.version == 4 and p.uid == "x"
    assert list(p.input.externalInputs) == ["tfsimple.step.tfsimple1.outputs"]
    again = convert.from_proto(p)
    assert convert.creation_message(again, NAMER) == convert.creation_message(pv, NAMER)


def test_new_uid_per_version_is_xid_like():
    a, b = new_uid(), new_uid()
    assert a != b and is_uid(a) and is_uid(b)
    assert load(TFSIMPLES).uid != load(TFSIMPLES).uid


def test_multi_document_yaml():
    ps = convert.pipelines_from_yaml(TFSIMPLES + "\n---\n" + EXTENDED_STEP)
    assert [p.name for p in ps] == ["tfsimples", "tfsimple-extended-step"]
    assert ps[0].kubernetesMeta.generation == 0
    assert isinstance(ps[0], scheduler_pb2.Pipeline)
