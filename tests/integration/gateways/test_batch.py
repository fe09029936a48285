"""Batch scoring through a simulated pipeline: results matched by key, errors kept apart,
an interrupted run resumed without duplicates, JSONL and Avro."""
from __future__ import annotations

import json

import fastavro
import pytest

from dataflow.kafka import TopicNamer
from gateways.batch import INPUT_SCHEMA, BatchJob, BatchRun

from .simulated import SimulatedPipeline

PARTITIONS = 2


def _request(i: int) -> dict:
    body = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2], "data": [[i, i + 1]]}]}
    if i % 50 == 7:
        body["parameters"] = {"fail": f"bad value {i}"}
    return body


@pytest.fixture
def pipeline(kafka):
    namer = TopicNamer(prefix=kafka.unique("batch").replace("-", ""))
    name = "batchp"
    kafka.create_topics(namer.pipeline_inputs(name), namer.pipeline_outputs(name), partitions=PARTITIONS)
    with SimulatedPipeline(kafka, namer.pipeline_inputs(name), namer.pipeline_outputs(name), model="tfsimple1") as sim:
        yield namer, name, sim


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _check(results, errors, n):
    indices = [r["index"] for r in results] + [e["index"] for e in errors]
    assert sorted(indices) == list(range(n)), "every request answered exactly once"
    for r in results:
        i = r["index"]
        assert r["response"]["outputs"][0]["data"] == [i, i + 1]
        assert r["key"].endswith(f"-{i}") and int(r["key"].split(".")[0]) == i % PARTITIONS
    for e in errors:
        assert e["error"] == f"tfsimple1 : rpc error: code = InvalidArgument desc = bad value {e['index']}"


def _write_requests(path, n):
    """``n`` JSON-lines requests (``_request(0..n-1)``) in ``path``."""
    path.write_text("".join(json.dumps(_request(i)) + "\n" for i in range(n)))
    return path


def test_jsonl_interrupted_run_resumes_without_duplicates(kafka, pipeline, tmp_path):
    namer, name, _sim = pipeline
    n = 600
    src = _write_requests(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    job = BatchJob(pipeline=name, input=str(src), output=str(out), max_in_flight=50, progress=False,
                   stop_after=200)
    first = BatchRun(job, kafka.settings, namer).run()
    assert first.interrupted
    partial = _read_jsonl(out)
    assert partial and len(partial) < n
    # a torn last line from a crash mid-write is cut off on resume
    with open(out, "a") as f:
        f.write('{"index": 99999, "trunc')
    job.stop_after = None
    second = BatchRun(job, kafka.settings, namer).run()
    assert not second.interrupted
    assert second.resent < n  # only the missing ones were sent again
    results, errors = _read_jsonl(out), _read_jsonl(tmp_path / "out.errors.jsonl")
    _check(results, errors, n)
    assert len(errors) == len([i for i in range(n) if i % 50 == 7])


def test_avro_in_and_out(kafka, pipeline, tmp_path):
    namer, name, _ = pipeline
    n = 120
    src = tmp_path / "in.avro"
    with open(src, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(INPUT_SCHEMA),
                        [{"id": f"r{i}", "request": json.dumps(_request(i))} for i in range(n)])
    out = tmp_path / "out.avro"
    summary = BatchRun(BatchJob(pipeline=name, input=str(src), output=str(out), progress=False),
                       kafka.settings, namer).run()
    assert summary.scored + summary.errors == n
    with open(out, "rb") as f:
        results = [dict(r, response=json.loads(r["response"])) for r in fastavro.reader(f)]
    with open(tmp_path / "out.errors.avro", "rb") as f:
        errors = list(fastavro.reader(f))
    _check(results, errors, n)
    assert {r["id"] for r in results} <= {f"r{i}" for i in range(n)}


def test_bad_lines_are_errors_not_crashes(kafka, pipeline, tmp_path):
    namer, name, _ = pipeline
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(_request(1)) + "\nnot json\n" +
                   json.dumps({"inputs": [{"name": "x", "datatype": "NOPE", "shape": [1], "data": [1]}]}) + "\n")
    out = tmp_path / "out.jsonl"
    summary = BatchRun(BatchJob(pipeline=name, input=str(src), output=str(out), progress=False),
                       kafka.settings, namer).run()
    assert summary.scored == 1 and summary.errors == 2
    errors = _read_jsonl(tmp_path / "out.errors.jsonl")
    assert sorted(e["index"] for e in errors) == [1, 2]
    assert all(e["error"].startswith("bad request:") for e in errors)


def test_ten_thousand_requests(kafka, pipeline, tmp_path):
    namer, name, _ = pipeline
    n = 10_000
    src = _write_requests(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    job = BatchJob(pipeline=name, input=str(src), output=str(out), max_in_flight=500, progress=False,
                   stop_after=4000)
    BatchRun(job, kafka.settings, namer).run()
    job.stop_after = None
    summary = BatchRun(job, kafka.settings, namer).run()
    _check(_read_jsonl(out), _read_jsonl(tmp_path / "out.errors.jsonl"), n)
    print(f"\nresumed run: {summary.throughput:,.0f} req/s")
