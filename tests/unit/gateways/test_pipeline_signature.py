"""A pipeline's tensor metadata from its first and last steps' models, and the metadata cache."""
import asyncio

from gateways import pipeline_signature as sig
from gateways.model_metadata import ModelMetadataCache
from scheduler_min import convert
from tests.manifests import TFSIMPLES


def announced(yaml_text: str):
    return convert.to_proto(convert.from_proto(convert.pipelines_from_yaml(yaml_text)[0], version=1, uid="u"))


def t(name, datatype="INT32", shape=(-1, 16)):
    return {"name": name, "datatype": datatype, "shape": list(shape)}


ADDSUB = {"inputs": [t("INPUT0"), t("INPUT1")], "outputs": [t("OUTPUT0"), t("OUTPUT1")]}


def test_a_chain_takes_its_first_models_inputs_and_gives_its_last_models_outputs():
    spec = announced(TFSIMPLES)
    assert sig.first_and_last_models(spec) == {"tfsimple1", "tfsimple2"}
    inputs, outputs = sig.signature(spec, {"tfsimple1": ADDSUB, "tfsimple2": ADDSUB})
    assert inputs == ADDSUB["inputs"] and outputs == ADDSUB["outputs"]
    # a model whose server did not answer leaves its side unknown, not half right
    assert sig.signature(spec, {"tfsimple1": ADDSUB, "tfsimple2": None}) == (ADDSUB["inputs"], [])
    assert sig.signature(spec, {"tfsimple1": None, "tfsimple2": ADDSUB}) == ([], ADDSUB["outputs"])


def test_selected_and_renamed_tensors():
    spec = announced("""
kind: Pipeline
metadata: {name: p}
spec:
  steps:
    - name: a
      inputs: [p.inputs.X]
      tensorMap: {p.inputs.X: INPUT0}
    - name: b
  output:
    steps: [a.outputs.OUTPUT1, b]
    tensorMap: {a.outputs.OUTPUT1: DIFF}
""")
    a = {"inputs": [t("INPUT0")], "outputs": [t("OUTPUT0"), t("OUTPUT1")]}
    b = {"inputs": [t("Y", "FP32", [4])], "outputs": [t("Z", "FP32", [4])]}
    inputs, outputs = sig.signature(spec, {"a": a, "b": b})
    assert inputs == [t("X"), t("Y", "FP32", [4])]
    assert outputs == [t("DIFF"), t("Z", "FP32", [4])]


def test_cache_shares_calls_keeps_answers_and_retries_failures():
    calls = []

    async def fetcher(endpoint, model, timeout_s):
        calls.append((endpoint, model))
        await asyncio.sleep(0)  # under test: a second get arrives while this call is in flight, and shares it
        if model == "down":
            raise ConnectionError("refused")
        return ADDSUB

    async def run():
        cache = ModelMetadataCache(ttl_s=60, retry_s=0, fetcher=fetcher)
        assert await cache.get("m") is None and calls == []  # no known server: not asked
        cache.set_endpoint("m", "grpc://h:1")
        cache.set_endpoint("down", "grpc://h:2")
        assert await asyncio.gather(cache.get("m"), cache.get("m")) == [ADDSUB, ADDSUB]
        assert await cache.get("m") == ADDSUB and calls == [("grpc://h:1", "m")]  # one call, then kept
        assert await cache.get("down") is None and await cache.get("down") is None
        assert calls.count(("grpc://h:2", "down")) == 2  # a failure is asked again after retry_s
        cache.set_endpoint("m", "grpc://h:3")  # moved: asked again
        assert await cache.get("m") == ADDSUB and calls[-1] == ("grpc://h:3", "m")
        cache.set_endpoint("m", None)
        assert await cache.get("m") is None

    asyncio.run(run())
