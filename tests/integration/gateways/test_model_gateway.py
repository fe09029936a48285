"""Model gateway over the embedded broker against fake OIP servers (gRPC and REST)."""
from __future__ import annotations

import time

import pytest
from tritonclient.grpc import service_pb2 as pb

from dataflow import headers as H
from dataflow.kafka import TopicNamer
from gateways.model_service import ModelGatewayConfig, ModelGatewayService

from . import fake_oip
from .harness import BackgroundLoop, free_port

PARTITIONS = 2


def _request(name="INPUT", values=(1, 2, 3, 4)) -> bytes:
    req = pb.ModelInferRequest()
    t = req.inputs.add(name=name, datatype="INT32", shape=[len(values)])
    t.contents.int_contents.extend(values)
    return req.SerializeToString()


def _collect(kafka, topics, want, timeout=30, key=None, prefix=None):
    """Records of ``topics`` (only those with ``key`` (a key or a set of keys), or a key starting
    with ``prefix``, if given) until ``want`` arrived."""
    c = kafka.consumer(offset_reset="earliest")
    c.subscribe(topics)
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < want and time.monotonic() < deadline:
            for m in c.consume(100, 0.2):
                if m.error():
                    continue
                k = m.key().decode()
                if (key is None or k == key or (not isinstance(key, str) and k in key)) \
                        and (prefix is None or k.startswith(prefix)):
                    got.append(m)
    finally:
        c.close()
    return got


@pytest.fixture(scope="module")
def gw(kafka):
    grpc_port, rest_port, dead_port = free_port(), free_port(), free_port()
    server, servicer = fake_oip.start_grpc(grpc_port)
    bg = BackgroundLoop()
    rest = bg.run(fake_oip.start_rest(rest_port))
    namer = TopicNamer(prefix=kafka.unique("mgw").replace("-", ""))
    kafka.create_topics(namer.errors(), partitions=PARTITIONS)
    cfg = ModelGatewayConfig(settings=kafka.settings, namer=namer, partitions=PARTITIONS, timeout_s=10,
                             consumer_prefix=kafka.unique("mgw"), metrics_port=free_port(),
                             static_models={"add10": f"grpc://127.0.0.1:{grpc_port}",
                                            "add10-rest": f"http://127.0.0.1:{rest_port}",
                                            # nothing listens there until test_circuit_closes_...
                                            "dead": f"grpc://127.0.0.1:{dead_port}",
                                            "dead-rest": f"http://127.0.0.1:{free_port()}"})
    svc = ModelGatewayService(cfg)
    bg.run(svc.start())
    assert all(svc.gateway.wait_assigned(m) for m in cfg.static_models)
    yield {"svc": svc, "namer": namer, "servicer": servicer, "bg": bg, "grpc_port": grpc_port, "dead_port": dead_port}
    bg.run(svc.stop())
    bg.run(rest.cleanup())
    bg.close()
    server.stop(0)


HEADERS = [(H.PIPELINE, b"p"), (H.REQUEST_ID, b"rid"), ("x-seldon-route", b":a:"), ("x-custom", b"c")]


@pytest.mark.parametrize("model,server", [("add10", "grpc"), ("add10-rest", "rest")])
def test_success_same_key_partition_and_headers(kafka, gw, model, server):
    namer = gw["namer"]
    prod = kafka.producer()
    key = f"1.p.{model}-ok"
    prod.produce(namer.model_inputs(model), _request(), key=key, partition=1, headers=HEADERS)
    prod.flush(10)
    [m] = _collect(kafka, [namer.model_outputs(model)], 1, key=key)
    assert m.partition() == 1
    resp = pb.ModelInferResponse()
    resp.ParseFromString(m.value())
    assert list(resp.outputs[0].contents.int_contents) == [11, 12, 13, 14]
    hdrs = m.headers()
    assert hdrs[:4] == HEADERS  # input headers first, unchanged
    assert ("x-fake-server", server.encode()) in hdrs[4:]


def test_grpc_call_metadata_and_model_name(kafka, gw):
    servicer = gw["servicer"]
    md = dict(servicer.metadata[-1])
    assert md["seldon-model"] == "add10"
    assert md["x-request-id"] == "rid" and md["x-custom"] == "c"
    assert "x-seldon-route" not in md
    assert servicer.requests[-1].model_name == "add10"


@pytest.mark.parametrize("model,text", [
    ("add10", "rpc error: code = InvalidArgument desc = unexpected input 'BAD' for model 'add10'"),
    ("add10-rest", '{"error": "unexpected input \'BAD\'"}'),
])
def test_failure_goes_to_errors_topic(kafka, gw, model, text):
    namer = gw["namer"]
    prod = kafka.producer()
    key = f"1.p.{model}-bad"
    prod.produce(namer.model_inputs(model), _request("BAD"), key=key, partition=1, headers=HEADERS)
    prod.flush(10)
    found = _collect(kafka, [namer.errors()], 1, timeout=30, key=key)
    assert found, "no error record"
    m = found[0]
    assert m.partition() == 1
    assert m.value().decode() == text
    assert m.headers() == HEADERS + [(H.PIPELINE_ERRORS, model.encode())]


def test_response_accepted_as_request_and_model_added_at_runtime(kafka, gw):
    namer, svc = gw["namer"], gw["svc"]
    gw["bg"].run(svc.gateway.add_model("late", f"grpc://127.0.0.1:{gw['grpc_port']}"))
    assert svc.gateway.wait_assigned("late")
    resp = pb.ModelInferResponse()
    t = resp.outputs.add(name="OUTPUT", datatype="INT32", shape=[2])
    t.contents.int_contents.extend([5, 6])
    prod = kafka.producer()
    prod.produce(namer.model_inputs("late"), resp.SerializeToString(), key="0.p.late", partition=0,
                 headers=HEADERS)
    prod.flush(10)
    [m] = _collect(kafka, [namer.model_outputs("late")], 1)
    out = pb.ModelInferResponse()
    out.ParseFromString(m.value())
    assert list(out.outputs[0].contents.int_contents) == [15, 16]
    gw["bg"].run(svc.gateway.remove_model("late"))
    assert "late" not in svc.gateway.models()


def test_metrics_count_calls_errors_and_latency_per_model(kafka, gw):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    namer, svc = gw["namer"], gw["svc"]

    def scrape():
        url = f"http://127.0.0.1:{svc.config.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {(s.name, s.labels.get("model"), s.labels.get("outcome"), s.labels.get("le")): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    before = scrape()
    prod = kafka.producer()
    for i in range(3):
        prod.produce(namer.model_inputs("add10"), _request(), key=f"0.p.metrics-ok{i}", partition=0)
    prod.produce(namer.model_inputs("add10"), _request("BAD"), key="0.p.metrics-bad", partition=0)
    prod.flush(10)
    assert len(_collect(kafka, [namer.model_outputs("add10")], 1, key="0.p.metrics-ok2")) == 1
    assert len(_collect(kafka, [namer.errors()], 1, key="0.p.metrics-bad")) == 1
    after = scrape()

    def grew(name, outcome=None, le=None):
        key = (name, "add10", outcome, le)
        return after[key] - before.get(key, 0)

    assert grew("dataflow_model_gateway_infer_total", "ok") == 3
    assert grew("dataflow_model_gateway_infer_total", "error") == 1
    assert grew("dataflow_model_gateway_infer_seconds_count") == 4
    assert grew("dataflow_model_gateway_infer_seconds_bucket", le="+Inf") == 4
    assert after[("dataflow_model_gateway_in_flight", "add10", None, None)] == 0
    assert ("dataflow_model_gateway_infer_total", "add10-rest", "ok", None) in after


# ---- failing fast ---------------------------------------------------------------------------------

def test_models_at_one_server_share_one_client(gw):
    svc, port = gw["svc"], gw["grpc_port"]
    gw["bg"].run(svc.gateway.add_model("twin", f"127.0.0.1:{port}"))  # same server, other spelling
    try:
        served = svc.gateway._models
        assert served["twin"].client is served["add10"].client
    finally:
        gw["bg"].run(svc.gateway.remove_model("twin"))
    assert svc.gateway._models["add10"].client.breaker is not None  # still open for add10


@pytest.mark.parametrize("model", ["dead", "dead-rest"])
def test_burst_to_unreachable_server_fails_fast_with_error_records(kafka, gw, model):
    """Every record of a burst gets its error record; after a few real connection failures the
    circuit is open and the rest fail without trying (the text says so)."""
    namer = gw["namer"]
    prod = kafka.producer()
    n = 200
    for i in range(n):
        prod.produce(namer.model_inputs(model), _request(), key=f"0.p.{model}-burst{i}", partition=0,
                     headers=HEADERS)
    prod.flush(10)
    found = _collect(kafka, [namer.errors()], n, timeout=60, prefix=f"0.p.{model}-burst")
    assert {m.key().decode() for m in found} == {f"0.p.{model}-burst{i}" for i in range(n)}
    texts = [m.value().decode() for m in found]
    if model == "dead":
        assert all(t.startswith("rpc error: code = Unavailable desc = ") for t in texts), texts[0]
    assert sum("failing fast" in t for t in texts) >= n - 20, texts[:3]
    assert all(m.headers()[-1] == (H.PIPELINE_ERRORS, model.encode()) for m in found)


def test_circuit_closes_once_the_server_is_back(kafka, gw):
    namer = gw["namer"]
    server, _servicer = fake_oip.start_grpc(gw["dead_port"])
    consumer = kafka.consumer(offset_reset="earliest")
    consumer.subscribe([namer.model_outputs("dead")])
    try:
        prod = kafka.producer()
        # The breaker lets a probe through once its cool-down has passed: send until one answers.
        deadline = time.monotonic() + 30
        answered, i = False, 0
        while not answered and time.monotonic() < deadline:
            prod.produce(namer.model_inputs("dead"), _request(), key=f"0.p.dead-back{i}", partition=0)
            prod.flush(10)
            answered = any(not m.error() for m in consumer.consume(100, 0.5))
            i += 1
        assert answered, "the model server came back but no call reached it"
    finally:
        consumer.close()
        server.stop(0)


def _deadline_ms(seconds_from_now: float) -> bytes:
    return str(int((time.time() + seconds_from_now) * 1000)).encode()


def test_record_whose_caller_gave_up_is_not_sent_to_the_model(kafka, gw):
    namer, servicer = gw["namer"], gw["servicer"]
    prod = kafka.producer()
    late = HEADERS[:1] + [(H.REQUEST_ID, b"rid-late"), (H.DEADLINE, _deadline_ms(-1))]
    alive = HEADERS[:1] + [(H.REQUEST_ID, b"rid-alive"), (H.DEADLINE, _deadline_ms(60))]
    prod.produce(namer.model_inputs("add10"), _request(), key="0.p.late", partition=0, headers=late)
    prod.produce(namer.model_inputs("add10"), _request(), key="0.p.alive", partition=0, headers=alive)
    prod.flush(10)
    got = {m.key(): m for m in _collect(kafka, [namer.errors(), namer.model_outputs("add10")], 2,
                                        key={"0.p.late", "0.p.alive"})}
    err, ok = got[b"0.p.late"], got[b"0.p.alive"]
    assert err.topic() == namer.errors() and ok.topic() == namer.model_outputs("add10")
    assert err.value().decode().startswith("not sent to model add10: the caller's deadline passed")
    assert err.headers() == late + [(H.PIPELINE_ERRORS, b"add10")]
    ids = [dict(md).get("x-request-id") for md in servicer.metadata]
    assert "rid-alive" in ids and "rid-late" not in ids
    assert gw["svc"].gateway.expired >= 1


def test_non_ascii_header_is_a_readable_error(kafka, gw):
    namer = gw["namer"]
    prod = kafka.producer()
    headers = [(H.REQUEST_ID, b"rid-utf8"), ("x-name", "Zo\u00eb".encode())]
    prod.produce(namer.model_inputs("add10"), _request(), key="0.p.utf8", partition=0, headers=headers)
    prod.flush(10)
    [err] = _collect(kafka, [namer.errors()], 1, key="0.p.utf8")
    assert err.value().decode() == ('rpc error: code = Internal desc = header key "x-name" contains value '
                                    'with non-printable ASCII characters')


# ---- batching -------------------------------------------------------------------------------------

def _row_request(values, name="INPUT") -> bytes:
    req = pb.ModelInferRequest()
    t = req.inputs.add(name=name, datatype="INT32", shape=[1, len(values)])
    t.contents.int_contents.extend(values)
    return req.SerializeToString()


def test_waiting_records_go_as_one_call_and_each_gets_its_own_answer(kafka, gw):
    """One worker, batches of up to 16: records that queue behind the first call are stacked into
    one request; each answer is cut back to its record, and a record that cannot be stacked with
    the others (here: other input name, which the server refuses) fails alone."""
    namer, servicer = gw["namer"], gw["servicer"]
    bg = gw["bg"]
    cfg = ModelGatewayConfig(settings=kafka.settings, namer=namer, partitions=PARTITIONS, timeout_s=10,
                             consumer_prefix=kafka.unique("mgwb"), workers=1, max_batch=16, batching="always",
                             static_models={"add10-batched": f"grpc://127.0.0.1:{gw['grpc_port']}"})
    svc = ModelGatewayService(cfg)
    bg.run(svc.start())
    try:
        assert svc.gateway.wait_assigned("add10-batched")
        before = len(servicer.requests)
        prod = kafka.producer()
        n = 40
        for i in range(n):
            value = _row_request([i, i + 1], name="BAD" if i == 20 else "INPUT")
            prod.produce(namer.model_inputs("add10-batched"), value, key=f"0.p.batch{i}", partition=0,
                         headers=[(H.REQUEST_ID, f"rid-batch{i}".encode())])
        prod.flush(10)
        got = _collect(kafka, [namer.model_outputs("add10-batched"), namer.errors()], n, prefix="0.p.batch")
        outs = [m for m in got if m.topic() == namer.model_outputs("add10-batched")]
        [err] = [m for m in got if m.topic() == namer.errors()]
        assert len(outs) == n - 1 and err.key() == b"0.p.batch20"
        for m in outs:
            i = int(m.key().decode()[len("0.p.batch"):])
            resp = pb.ModelInferResponse()
            resp.ParseFromString(m.value())
            assert list(resp.outputs[0].shape) == [1, 2]
            assert list(resp.outputs[0].contents.int_contents) == [i + 10, i + 11]
            assert (H.REQUEST_ID, f"rid-batch{i}".encode()) in m.headers()  # its own headers
        assert "unexpected input 'BAD'" in err.value().decode()
        sizes = [r.inputs[0].shape[0] for r in servicer.requests[before:] if r.model_name == "add10-batched"]
        assert sum(sizes) == n and max(sizes) > 1, sizes
    finally:
        bg.run(svc.stop())


def _metadata(model: str, first_dim: int) -> pb.ModelMetadataResponse:
    T = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(name=model, inputs=[T(name="INPUT", datatype="INT32", shape=[first_dim, 2])],
                                    outputs=[T(name="INPUT", datatype="INT32", shape=[first_dim, 2])])


def test_by_default_only_models_declaring_a_batch_dimension_are_batched(kafka, gw):
    """``auto``: a model whose server declares a variable first dimension (-1) on every tensor gets
    its waiting records stacked; one with a fixed first dimension is called once per record."""
    namer, servicer, bg = gw["namer"], gw["servicer"], gw["bg"]
    servicer.model_metadata["add10-declared"] = _metadata("add10-declared", -1)
    servicer.model_metadata["add10-fixed"] = _metadata("add10-fixed", 1)
    endpoint = f"grpc://127.0.0.1:{gw['grpc_port']}"
    cfg = ModelGatewayConfig(settings=kafka.settings, namer=namer, partitions=PARTITIONS, timeout_s=10,
                             consumer_prefix=kafka.unique("mgwa"), workers=1,
                             static_models={"add10-declared": endpoint, "add10-fixed": endpoint})
    svc = ModelGatewayService(cfg)
    bg.run(svc.start())
    try:
        gateway = svc.gateway
        assert gateway.wait_assigned("add10-declared") and gateway.wait_assigned("add10-fixed")
        deadline = time.monotonic() + 10
        while gateway.records_per_call("add10-declared") == 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gateway.records_per_call("add10-declared") == 32
        assert gateway.records_per_call("add10-fixed") == 1
        before = len(servicer.requests)
        prod = kafka.producer()
        n = 30
        for model in ("add10-declared", "add10-fixed"):
            for i in range(n):
                prod.produce(namer.model_inputs(model), _row_request([i, i + 1]), key=f"0.p.{model}{i}",
                             partition=0)
        prod.flush(10)
        for model in ("add10-declared", "add10-fixed"):
            outs = _collect(kafka, [namer.model_outputs(model)], n, prefix=f"0.p.{model}")
            assert len(outs) == n
            for m in outs:
                i = int(m.key().decode()[len(f"0.p.{model}"):])
                resp = pb.ModelInferResponse()
                resp.ParseFromString(m.value())
                assert list(resp.outputs[0].shape) == [1, 2]
                assert list(resp.outputs[0].contents.int_contents) == [i + 10, i + 11]
        sizes = {model: [r.inputs[0].shape[0] for r in servicer.requests[before:] if r.model_name == model]
                 for model in ("add10-declared", "add10-fixed")}
        assert sum(sizes["add10-declared"]) == n and max(sizes["add10-declared"]) > 1, sizes
        assert sizes["add10-fixed"] == [1] * n
    finally:
        bg.run(svc.stop())
