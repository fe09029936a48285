"""Malformed Pipeline/Model files through the real CLI (a subprocess, as a user runs it).

Every one must end in exactly one ``Error:`` line on stderr naming the file and the problem, exit
code 1 and no traceback. The scheduler address points nowhere: parsing must fail before any
connection, and the expected fragment proves it did (an unreachable scheduler is an error too).
"""
from __future__ import annotations

import codecs
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PIPELINE = """apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: {name}
spec:
  steps:
    - name: {step}
      inputs: [{name}.inputs]
  output:
    steps: [{step}]
"""
MODEL = """apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata:
  name: {name}
spec:
  storageUri: grpc://127.0.0.1:9500
  memory: {memory}
"""


def pipeline(name="p", step="m") -> str:
    return PIPELINE.format(name=name, step=step)


def model(name="m", memory="100Ki") -> str:
    return MODEL.format(name=name, memory=memory)


def _binary() -> bytes:
    rng = random.Random(7)
    return bytes([0x89, 0xFF, 0xFE, 0x91]) + bytes(rng.randrange(256) for _ in range(2000))


# Problems any manifest can have, whatever its kind: (case id, file bytes, expected fragment).
ANY_KIND = [
    ("binary", _binary(), "not UTF-8 text"),
    ("elf-header", b"\x7fELF\x02\x01\x01\x00" + bytes(64), "contains NUL bytes"),
    ("utf16-le-no-bom", pipeline().encode("utf-16-le"), "contains NUL bytes"),
    ("utf16-be-no-bom", pipeline().encode("utf-16-be"), "contains NUL bytes"),
    ("utf16-bom-truncated", pipeline().encode("utf-16")[:-1], "not UTF-16"),
    ("utf16-bom-duplicate-key", ("kind: Pipeline\nkind: Model\n").encode("utf-16"),
     "duplicate key 'kind' in the top level (first at line 1, column 1)"),
    ("utf8-bom-duplicate-key", codecs.BOM_UTF8 + b"metadata: {name: a, name: b}\n", "duplicate key 'name' in metadata"),
    ("empty", b"", "no YAML documents found"),
    ("whitespace", b"\n\n   \n", "no YAML documents found"),
    ("only-comments", b"# a comment\n# another\n", "no YAML documents found"),
    ("only-separators", b"---\n---\n", "no YAML documents found"),
    ("list", b"- kind: Pipeline\n- kind: Model\n", "document 1 is a list, expected a mapping"),
    ("scalar", b"just some words\n", "document 1 is a string, expected a mapping"),
    ("number", b"42\n", "document 1 is a number, expected a mapping"),
    ("second-document-list", pipeline().encode() + b"---\n- 1\n", "document 2 is a list"),
    ("deep-flow-20000", b"[" * 20000 + b"]" * 20000, "nested more than 64 levels deep"),
    ("deep-block-20000", b"- " * 20000 + b"x\n", "nested more than 64 levels deep"),
    ("deep-mapping-20000", b"{a: " * 20000 + b"1" + b"}" * 20000, "nested more than 64 levels deep"),
    ("unclosed-bracket", b"kind: Pipeline\nmetadata: {name: [\n", "malformed YAML at line"),
    ("tab-indent", b"kind: Pipeline\nmetadata:\n\tname: p\n", "malformed YAML at line 3"),
    ("bell-character", b"kind: Pipeline\x07\n", "unacceptable character #x0007"),
    ("lone-surrogate", b'kind: "\\ud800"\n', "lone UTF-16 surrogate"),
    ("unhashable-key", b"? [a, b]\n: 1\n", "malformed YAML"),
    ("python-tag", b"kind: !!python/object/apply:os.system [echo hi]\n", "malformed YAML"),
]

PIPELINE_ONLY = [
    ("duplicate-top-level", pipeline().replace("kind: Pipeline\n", "kind: Pipeline\nkind: Pipeline\n"),
     "duplicate key 'kind' in the top level (first at line 2, column 1)"),
    ("duplicate-nested", pipeline().replace("      inputs:", "      inputs: [a]\n      inputs:"),
     "duplicate key 'inputs' in spec.steps[0] (first at line 8, column 7)"),
    ("name-300-chars", pipeline(name="a" * 300),
     "pipeline name aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...(300 characters) is too long: its topic "
     "seldon.default.pipeline.<name>.outputs would be 332 characters, over Kafka's limit of 249"),
    ("step-name-300-chars", pipeline(step="s" * 300), "step name ssssssss"),
    ("wrong-kind", model(), "expected kind Pipeline, got 'Model'"),
    ("no-kind", pipeline().replace("kind: Pipeline\n", ""), "expected kind Pipeline, got None"),
    ("wrong-api-version", pipeline().replace("v1alpha1", "v9"), "apiVersion must be mlops.seldon.io/v1alpha1"),
    ("no-metadata", "kind: Pipeline\nspec: {steps: [{name: m}]}\n", "Pipeline has no metadata.name"),
    ("metadata-list", "kind: Pipeline\nmetadata: [name, p]\n", "Pipeline metadata must be a mapping, got a list"),
    ("name-number", "kind: Pipeline\nmetadata: {name: 7}\n", "metadata.name must be a string, got 7"),
    ("generation-text", pipeline().replace("  name: p\n", "  name: p\n  generation: many\n"),
     "metadata.generation of p must be a non-negative integer"),
    ("steps-mapping", "kind: Pipeline\nmetadata: {name: p}\nspec: {steps: {name: m}}\n",
     "spec.steps of p must be a list"),
    ("step-no-name", "kind: Pipeline\nmetadata: {name: p}\nspec: {steps: [{inputs: [p]}]}\n",
     "spec.steps[0] of p has no name"),
    ("unknown-field", pipeline().replace("      inputs:", "      input:"),
     'unknown field "input" in spec.steps[0] of p'),
    ("tensor-map-nested", pipeline().replace("      inputs:", "      tensorMap: {a: {b: c}}\n      inputs:"),
     "spec.steps[0].tensorMap of p must map strings to strings"),
    ("join-window-negative", pipeline().replace("      inputs:", "      joinWindowMs: -5\n      inputs:"),
     "spec.steps[0].joinWindowMs of p must be a non-negative integer, got -5"),
    ("rolling-not-bool", pipeline().replace("      inputs:", "      batch: {size: 2, rolling: maybe}\n      inputs:"),
     "spec.steps[0].batch.rolling of p must be true or false"),
]

MODEL_ONLY = [
    ("duplicate-nested", model().replace("  memory:", "  memory: 1Gi\n  memory:"), "duplicate key 'memory' in spec"),
    ("name-300-chars", model(name="m" * 300), "model name mmmmmmmm"),
    ("wrong-kind", pipeline(), "expected kind Model, got 'Pipeline'"),
    ("memory-bad", model(memory="1.2.3Gi"), "spec.memory of m is not a quantity like 100Ki or 1Gi"),
    ("memory-list", model(memory="[1, 2]"), "spec.memory of m is not a quantity"),
    ("storage-uri-mapping", model().replace("grpc://127.0.0.1:9500", "{a: b}"),
     "spec.storageUri of m must be a string"),
]

COMMANDS = {
    "pipeline-load": ["pipeline", "load", "-f"],
    "pipeline-unload": ["pipeline", "unload", "-f"],
    "model-load": ["model", "load", "-f"],
    "model-unload": ["model", "unload", "-f"],
    "up": ["up", "--no-models", "--pipelines"],
}
# A 300-character name is refused when loading; unloading by it just asks the scheduler.
LOAD_ONLY = {"name-300-chars", "step-name-300-chars"}


def _cases():
    out = []
    for cid, data, fragment in ANY_KIND:
        for command in COMMANDS:
            out.append((command, cid, data, fragment))
    for kind_cases, commands in ((PIPELINE_ONLY, ("pipeline-load", "pipeline-unload", "up")),
                                 (MODEL_ONLY, ("model-load", "model-unload"))):
        for cid, text, fragment in kind_cases:
            for command in commands:
                if cid in LOAD_ONLY and command.endswith("unload"):
                    continue
                out.append((command, cid, text.encode(), fragment))
    return out


CASES = _cases()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case's CLI subprocess (a few at a time) once; tests below look their result up."""
    tmp = tmp_path_factory.mktemp("malformed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELDON_", "POD_NAMESPACE"))}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp), DATAFLOW_CLI_CONFIG=str(tmp / "no-config.json"),
               SELDON_SCHEDULE_HOST="127.0.0.1:1")

    def run(case):
        command, cid, data, _ = case
        path = tmp / f"{command}-{cid}.yaml"
        path.write_bytes(data)
        argv = [sys.executable, "-m", "dataflow_cli", *COMMANDS[command], str(path)]
        if command == "up":
            argv += ["--state-dir", str(tmp / f"state-{cid}")]
        proc = subprocess.run(argv, capture_output=True, check=False, timeout=60, env=env, cwd=str(tmp))
        return (command, cid), (proc.returncode, proc.stderr.decode("utf-8", "replace"), str(path))

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.parametrize("command,cid,data,fragment", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_malformed_file_is_one_error_line(results, command, cid, data, fragment):
    code, err, path = results[(command, cid)]
    assert "Traceback" not in err, err[-3000:]
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err[-3000:]
    assert code == 1
    assert path in lines[0], lines[0]
    assert fragment in lines[0], lines[0]
