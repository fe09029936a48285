"""The README's ``PipelineTestDriver`` example, step for step, on examples/pipelines/tfsimples.yaml.

Keeps the README true: if this test changes, the README example must change with it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from dataflow import oip
from dataflow_testing.driver import PipelineTestDriver
from scheduler_min.convert import pipeline_message  # Pipeline YAML spec -> Create message

TFSIMPLES_YAML = Path(__file__).resolve().parents[3] / "examples" / "pipelines" / "tfsimples.yaml"


def fake_tfsimple(req):
    """Triton's ``simple`` model: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (INT32)."""
    a = oip.request_arrays(req)
    return oip.make_response({"OUTPUT0": a["INPUT0"] + a["INPUT1"], "OUTPUT1": a["INPUT0"] - a["INPUT1"]},
                               id=req.id)


def test_readme_driver_example_on_tfsimples():
    spec_dict = yaml.safe_load(TFSIMPLES_YAML.read_text())
    driver = PipelineTestDriver(pipeline_message(spec_dict))
    driver.model("tfsimple1", lambda req: fake_tfsimple(req))
    driver.model("tfsimple2", lambda req: fake_tfsimple(req))
    x = np.arange(1, 17, dtype=np.int32).reshape(1, 16)
    y = np.full((1, 16), 3, dtype=np.int32)
    driver.pipe("seldon.default.pipeline.tfsimples.inputs", oip.make_request({"INPUT0": x, "INPUT1": y}, id="r1"),
                key="0.tfsimples.r1", headers=[("pipeline", b"tfsimples")])
    driver.advance(1000)                                       # manual clock: window expiry, batch flush
    out = driver.read("seldon.default.pipeline.tfsimples.outputs")

    assert len(out) == 1
    [record] = out
    assert record.key == "0.tfsimples.r1"
    assert ("pipeline", b"tfsimples") in record.headers
    resp = oip.parse_response(record.value)
    assert resp.id == "r1"
    arrays = oip.response_arrays(resp)
    assert sorted(arrays) == ["OUTPUT0", "OUTPUT1"]
    # tfsimple1 gives (x + y, x - y); tfsimple2 adds and subtracts those again: (2x, 2y).
    np.testing.assert_array_equal(arrays["OUTPUT0"], 2 * x)
    np.testing.assert_array_equal(arrays["OUTPUT1"], 2 * y)
    assert arrays["OUTPUT0"].dtype == np.int32
    # The request passed through both model topics on the way, keyed as sent.
    assert [r.key for r in driver.read(driver.model_inputs("tfsimple1"))] == ["0.tfsimples.r1"]
    assert [r.key for r in driver.read(driver.model_inputs("tfsimple2"))] == ["0.tfsimples.r1"]
    assert driver.read(driver.errors_topic) == []
