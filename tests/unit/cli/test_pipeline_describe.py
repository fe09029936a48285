"""`dataflow pipeline describe` shows the topology an engine compiles from the scheduler's Create message.

Every sample pipeline is loaded into an in-process scheduler; a fake engine records the Create
messages the scheduler sends. For each pipeline, the CLI's text and JSON equal what
``build_topology`` makes of the engine's message, and the Mermaid chart is well formed with one
node per step and topic and one edge per source, trigger and sink.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dataflow.topology import build_topology
from dataflow_cli import main
from dataflow_testing.fake_engine import FakeEngine
from scheduler_min.manifest import pipelines_from_yaml
from scheduler_min.server import SchedulerConfig, run_in_thread
from tests.waiting import wait_until

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples" / "pipelines").glob("*.yaml"))


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(tmp_path / "no-config.json"))
    for var in ("SELDON_SCHEDULE_HOST", "SELDON_KAFKA_BROKER", "SELDON_KAFKA_CONFIG_PATH", "POD_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A scheduler with every sample pipeline loaded, and the Create message an engine got for each."""
    state = tmp_path_factory.mktemp("sched")
    sched = run_in_thread(SchedulerConfig(port=0, chainer_port=0, host="127.0.0.1", state_dir=str(state)))
    engine = FakeEngine(sched.chainer_address, "engine-describe")
    names = []
    try:
        for f in EXAMPLES:
            names += [p.name for p in pipelines_from_yaml(f.read_bytes(), str(f))]
            assert main(["pipeline", "load", "-f", str(f), "--scheduler-host", sched.address]) == 0
        wait_until(lambda: engine.running_pipelines() >= set(names), what="every sample pipeline sent to the engine")
        creates = {}
        for m in sorted(engine.running.values(), key=lambda m: m.version):
            creates[m.pipeline] = m
        assert set(creates) == set(names)
        yield sched.address, creates
    finally:
        engine.close()
        sched.stop()


def describe(capsys, host, *argv):
    code = main(["pipeline", "describe", *argv, "--scheduler-host", host])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_and_json_are_the_engines_topology(loaded, capsys):
    host, creates = loaded
    for name, msg in sorted(creates.items()):
        topology = build_topology(msg)
        code, out, err = describe(capsys, host, name)
        assert (code, err) == (0, ""), name
        assert out == topology.describe(), name
        code, out, err = describe(capsys, host, name, "--format", "json")
        assert (code, err) == (0, ""), name
        assert json.loads(out) == topology.as_dict(), name


def test_json_shows_joins_batches_and_renames(loaded, capsys):
    host, _ = loaded
    doc = json.loads(describe(capsys, host, "join", "--format", "json")[1])
    (joined,) = [s for s in doc["steps"] if s["name"] == "tfsimple3"]
    assert joined["join"] == "inner" and joined["windowMs"] > 0
    assert [s["renames"] for s in joined["sources"]] == [{"OUTPUT0": "INPUT0"}, {"OUTPUT1": "INPUT1"}]
    batched = [s for name in ("iris-batch",) for s in json.loads(describe(capsys, host, name, "--format", "json")[1])
               ["steps"] if s["batch"]]
    assert batched and batched[0]["batch"]["size"] > 0


NODE = re.compile(r'^  (\w+)(\(\["[^"]*"\]\)|\["[^"]*"\])$')
EDGE = re.compile(r'^  (\w+) (-->|-->\|"[^"]*"\||-\.->\|"[^"]*"\|) (\w+)$')


def parse_mermaid(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    """Nodes and edges of our flowchart subset; any other line fails the test."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes, edges = set(), []
    for line in lines[1:]:
        if m := NODE.match(line):
            assert m.group(1) not in nodes, f"node defined twice: {line}"
            nodes.add(m.group(1))
        elif m := EDGE.match(line):
            edges.append((m.group(1), m.group(3)))
        else:
            raise AssertionError(f"not a Mermaid node or edge: {line!r}")
    assert {n for e in edges for n in e} <= nodes, "edge to an undefined node"
    return nodes, edges


def test_mermaid_parses_with_one_node_per_step_and_topic(loaded, capsys):
    host, creates = loaded
    for name, msg in sorted(creates.items()):
        topology = build_topology(msg)
        code, out, _ = describe(capsys, host, name, "--format", "mermaid")
        assert code == 0
        nodes, edges = parse_mermaid(out)
        topics = {s.topic for st in topology.steps for s in st.sources + st.triggers} | topology.sink_topics
        assert len(nodes) == len(topology.steps) + len(topics), name
        assert len(edges) == sum(len(s.sources) + len(s.triggers) + 1 for s in topology.steps), name


def test_mermaid_labels_cannot_break_the_chart():
    from scheduler_min.convert import pipeline_message

    spec = {"name": "odd", "steps": [{"name": "m1"}, {"name": "m2", "inputs": ["m1.outputs.a|b"],
                                                     "tensorMap": {'m1.outputs.a|b': 'x"y'}}]}
    chart = build_topology(pipeline_message(spec)).mermaid()
    _nodes, edges = parse_mermaid(chart)
    assert len(edges) == 6                      # m1, m2 and error: one source and one sink each
    assert '-->|"a|b a|b→x#quot;y"| s_m2' in chart


@pytest.mark.parametrize("argv, message", [
    (("ghost",), "Error: pipeline ghost not found\n"),
    (("join", "--version", "99"), "Error: no version 99 of pipeline join on the scheduler\n"),
])
def test_bad_input_is_one_line(loaded, capsys, argv, message):
    host, _ = loaded
    code, out, err = describe(capsys, host, *argv)
    assert (code, out) == (1, "")
    assert err == message
