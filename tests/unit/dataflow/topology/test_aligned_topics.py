"""A pipeline names the topics whose records meet in one step, for the runtimes to align."""
from __future__ import annotations

from dataflow.kafka import TopicNamer
from dataflow.state.memory import MemoryStore
from dataflow.topology import compile_pipeline
from dataflow.topology.compiled import aligned_topics
from scheduler_min.convert import pipeline_message

NAMER = TopicNamer(prefix="seldon", namespace="default")


def compiled(spec):
    return compile_pipeline(pipeline_message(spec, uid="u", namer=NAMER), store_factory=MemoryStore)


def outputs(*models: str) -> frozenset[str]:
    return frozenset(NAMER.model_outputs(m) for m in models)


def test_joins_and_trigger_gates_of_two_topics_are_aligned_any_joins_and_chains_are_not():
    pipeline = compiled({"name": "q", "steps": [
        {"name": "a"},
        {"name": "b"},
        {"name": "j", "inputs": ["a", "b"]},                                 # a join: aligned
        {"name": "t", "inputs": ["j"], "triggers": ["b"]},                   # a trigger gate: aligned
        {"name": "y", "inputs": ["a", "b"], "inputsJoinType": "any"},        # buffers nothing
        {"name": "c", "inputs": ["a.outputs.X", "a.outputs.Y"]}]})           # one topic: nothing to align
    assert set(aligned_topics(pipeline)) == {outputs("a", "b"), outputs("j", "b")}


def test_pipelines_that_say_nothing_align_nothing():
    class Bare:
        pass

    assert aligned_topics(Bare()) == ()  # type: ignore[arg-type]
    assert aligned_topics(compiled({"name": "p", "steps": [{"name": "m1"}, {"name": "m2", "inputs": ["m1"]}]})) == ()
