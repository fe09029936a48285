"""Bad input is the client's error: every hostile or malformed request gets a 4xx (gRPC
INVALID_ARGUMENT / NOT_FOUND / ALREADY_EXISTS / RESOURCE_EXHAUSTED, or 503 / UNAVAILABLE for a
transient condition) with a one-line reason, before any Kafka work, and the gateway answers the
next valid request. Runs against one gateway over the embedded broker with a simulated pipeline."""
from __future__ import annotations

import http.client
import json
import logging
import threading

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dataflow.kafka import TopicNamer
from gateways.pipeline_service import PipelineGatewayConfig, PipelineGatewayService
from tests.waiting import wait_until

from .harness import BackgroundLoop, free_port
from .simulated import SimulatedPipeline

LIMIT = 4_000_000  # the gateway's request size limit here (default: 1,000,000,000)
PIPE = "bad"
ROUTE = {"seldon-model": f"{PIPE}.pipeline"}
VALID = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def gw(kafka):
    namer = TopicNamer(prefix=kafka.unique("bad").replace("-", ""))
    kafka.create_topics(namer.pipeline_inputs(PIPE), namer.pipeline_outputs(PIPE), partitions=2)
    cfg = PipelineGatewayConfig(settings=kafka.settings, namer=namer, http_port=free_port(), grpc_port=free_port(),
                                host="127.0.0.1", timeout_s=3.0, consumer_prefix=kafka.unique("bad"),
                                max_request_bytes=LIMIT)
    bg = BackgroundLoop()
    svc = PipelineGatewayService(cfg)
    bg.run(svc.start())

    async def announce():  # a pipeline whose output topic never gets a partition: transient 503
        svc.gateway.load_pipeline("nopart", 1)
    bg.run(announce())
    with SimulatedPipeline(kafka, namer.pipeline_inputs(PIPE), namer.pipeline_outputs(PIPE)):
        env = {"cfg": cfg, "svc": svc, "bg": bg}
        svc.gateway.timeout_s = 30.0
        _valid_request_answers(env)  # the first call waits for the output partitions and group
        svc.gateway.partition_wait_s = 0.3  # then "no partitions assigned" answers fast
        svc.gateway.timeout_s = 3.0  # and the duplicate-id tests' dropped requests time out soon
        yield env
    bg.run(svc.stop())
    bg.close()


def post(gw, body: bytes | dict, headers: dict | None = None, path: str = f"/v2/models/{PIPE}/infer"):
    """Raw http.client POST (urllib would refuse some of these headers)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", gw["cfg"].http_port, timeout=30)
    try:
        conn.putrequest("POST", path)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **ROUTE,
                     **(headers or {})}.items():
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(body)
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    except (ConnectionResetError, BrokenPipeError):  # the server answered before reading it all
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _tensor(shape, data, datatype="INT32"):
    return {"inputs": [{"name": "INPUT0", "datatype": datatype, "shape": shape, "data": data}]}


def _binary(size: int, data: bytes) -> tuple[bytes, dict]:
    """A binary-extension body: an INT32 [2] input claiming ``size`` bytes, then ``data``."""
    head = json.dumps({"inputs": [{"name": "A", "datatype": "INT32", "shape": [2],
                                   "parameters": {"binary_data_size": size}}]}).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


REST_CASES = [
    ("unknown pipeline", _tensor([1], [1]), {"seldon-model": "nope.pipeline"}, 404, "pipeline nope not found"),
    ("malformed routing header", _tensor([1], [1]), {"seldon-model": "a.b.c"}, 400,
     "Bad or missing header seldon-model a.b.c"),
    ("not JSON", b"{nope", {}, 400, "body is not valid JSON"),
    ("JSON array body", b"[1]", {}, 400, "body must be a JSON object"),
    ("deeply nested JSON", b"[" * 200_000 + b"]" * 200_000, {}, 400, "nested too deeply"),
    ("no inputs", {"inputs": []}, {}, 400, "request has no inputs"),
    ("claimed shape [1,20000000] with one value", _tensor([1, 20_000_000], [1], "FP64"), {}, 400,
     "has 1 values but shape [1, 20000000] holds 20000000"),
    ("claimed shape [1e6,1e6]", _tensor([1_000_000, 1_000_000], [1]), {}, 400, "holds 1000000000000"),
    ("float shape", _tensor([1e6], [1]), {}, 400, "shape must be a list of integers"),
    ("negative dimension", _tensor([-1], [1]), {}, 400, "negative dimension"),
    ("more values than the shape", _tensor([1], [1, 2]), {}, 400, "has 2 values but shape [1] holds 1"),
    ("unknown datatype", _tensor([1], [1], "INT128"), {}, 400, "unknown datatype 'INT128'"),
    ("value of the wrong type", _tensor([1], ["x"]), {}, 400, "must be a number"),
    ("value out of range", _tensor([1], [2**40]), {}, 400, "out of range for INT32"),
    ("non-ASCII X- header", VALID, {"X-Note": "caf\u00e9".encode("utf-8").decode("latin-1")}, 400,
     "header X-Note has a non-ASCII value"),
    ("header length past the body", VALID, {"Inference-Header-Content-Length": "99999"}, 400,
     "Inference-Header-Content-Length 99999 is outside"),
    ("header length not a number", VALID, {"Inference-Header-Content-Length": "ten"}, 400,
     "is not an integer"),
    ("binary size past the data", *_binary(8, b"\x01\0\0\0"), 400, "claims 8 bytes of binary data but only 4 remain"),
    ("binary data not filling the shape", *_binary(4, b"\x01\0\0\0"), 400,
     "has 1 binary elements but shape [2] holds 2"),
    ("binary data left over", *_binary(8, b"\0" * 12), 400, "4 bytes of binary data follow the last binary input"),
    ("over the size limit", b"{" + b" " * LIMIT + b"}", {}, 413, f"over the gateway's limit of {LIMIT} bytes"),
    ("no partition assigned (transient)", VALID, {"seldon-model": "nopart.pipeline"}, 503,
     "no partitions assigned"),
]


def _valid_request_answers(gw):
    status, body = post(gw, VALID)
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == [1, 2, 3, 4]


@pytest.mark.parametrize("case,body,headers,status,reason", REST_CASES, ids=[c[0] for c in REST_CASES])
def test_rest_bad_input_is_a_4xx_with_a_reason(gw, case, body, headers, status, reason):
    got, text = post(gw, body, headers)
    assert (got, reason in text) == (status, True), (case, got, text)
    assert "\n" not in text.strip() and "Traceback" not in text
    _valid_request_answers(gw)


def _in_flight(gw) -> set:
    async def check():
        return set(gw["svc"].gateway._in_flight)
    return gw["bg"].run(check())


def _grpc_req(shape=(1, 4), values=(1, 2, 3, 4), datatype="INT32", raw: bytes | None = None):
    req = pb.ModelInferRequest()
    t = req.inputs.add(name="INPUT0", datatype=datatype, shape=list(shape))
    if raw is not None:
        req.raw_input_contents.append(raw)
    else:
        t.contents.int_contents.extend(values)
    return req


GRPC_CASES = [
    ("unknown pipeline", _grpc_req(), "nope.pipeline", grpc.StatusCode.NOT_FOUND, "pipeline nope not found"),
    ("claimed shape [1,20000000]", _grpc_req((1, 20_000_000), (1,)), None, grpc.StatusCode.INVALID_ARGUMENT,
     "int_contents hold 1 INT32 elements but shape [1, 20000000] needs 20000000"),
    ("claimed shape [1e6,1e6] raw", _grpc_req((10**6, 10**6), raw=b"\0" * 4), None,
     grpc.StatusCode.INVALID_ARGUMENT, "needs 1000000000000"),
    ("raw not a multiple of the element", _grpc_req((1,), raw=b"\0" * 3), None, grpc.StatusCode.INVALID_ARGUMENT,
     "not a multiple of the 4-byte INT32 element size"),
    ("negative dimension", _grpc_req((-1,), ()), None, grpc.StatusCode.INVALID_ARGUMENT, "negative dimension"),
    ("unknown datatype", _grpc_req((1,), raw=b"\0", datatype="INT128"), None, grpc.StatusCode.INVALID_ARGUMENT,
     "unknown datatype 'INT128'"),
    ("no inputs", pb.ModelInferRequest(), None, grpc.StatusCode.INVALID_ARGUMENT, "request has no inputs"),
    ("over the size limit", _grpc_req((LIMIT // 4 + 1,), raw=b"\0" * (LIMIT + 4)), None,
     grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
    ("no partition assigned (transient)", _grpc_req(), "nopart.pipeline", grpc.StatusCode.UNAVAILABLE,
     "no partitions assigned"),
]


@pytest.mark.parametrize("case,req,route,code,reason", GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_grpc_bad_input_is_a_client_error_without_error_logs(gw, caplog, case, req, route, code, reason):
    caplog.set_level(logging.INFO)
    with grpc.insecure_channel(f"127.0.0.1:{gw['cfg'].grpc_port}",
                               options=[("grpc.max_send_message_length", 2 * LIMIT)]) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, metadata=[("seldon-model", route or f"{PIPE}.pipeline")], timeout=30)
        assert (err.value.code(), reason in err.value.details()) == (code, True), (case, err.value.details())
        resp = stub.ModelInfer(_grpc_req(), metadata=[("seldon-model", f"{PIPE}.pipeline")], timeout=30)
        assert list(resp.outputs[0].contents.int_contents) == [1, 2, 3, 4]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], case


def test_duplicate_in_flight_request_id_is_409_and_already_exists(gw):
    """The first requests (REST and gRPC) are never answered, so they are in flight while the
    duplicates arrive; once they time out, their ids are free again."""
    first: list = []
    dropped = dict(VALID, parameters={"drop": True})  # the simulated pipeline never answers it
    t = threading.Thread(target=lambda: first.append(post(gw, dropped, {"X-Request-Id": "dup-1"})))
    t.start()
    md = [("seldon-model", f"{PIPE}.pipeline"), ("x-request-id", "dup-g")]
    with grpc.insecure_channel(f"127.0.0.1:{gw['cfg'].grpc_port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        dropped_g = _grpc_req()
        dropped_g.parameters["drop"].bool_param = True
        first_g = stub.ModelInfer.future(dropped_g, metadata=md, timeout=30)
        wait_until(lambda: len(_in_flight(gw)) == 2)
        status, text = post(gw, VALID, {"X-Request-Id": "dup-1"})
        assert status == 409 and "a request with id dup-1 for bad.pipeline is already in flight" in text, text
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(_grpc_req(), metadata=md, timeout=30)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS, err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            first_g.result()
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        t.join(30)
        assert first[0][0] == 504
        assert stub.ModelInfer(_grpc_req(), metadata=md, timeout=30).outputs
    assert post(gw, VALID, {"X-Request-Id": "dup-1"})[0] == 200


def test_a_request_over_librdkafka_default_message_size_is_served(gw):
    """300k FP32 values (1.2 MB of protobuf): over librdkafka's 1 MB default, under the limit."""
    values = np.arange(300_000, dtype="<f4")
    req = pb.ModelInferRequest()
    req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 300_000])
    req.raw_input_contents.append(values.tobytes())
    with grpc.insecure_channel(f"127.0.0.1:{gw['cfg'].grpc_port}",
                               options=[("grpc.max_receive_message_length", 2 * LIMIT)]) as ch:
        resp = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, metadata=[("seldon-model", f"{PIPE}.pipeline")],
                                                               timeout=30)
    assert np.array_equal(np.frombuffer(resp.raw_output_contents[0], "<f4"), values)


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.slow
def test_rss_stays_flat_across_a_thousand_hostile_requests(gw):
    """The gateway runs in this process: its memory must not grow with refused requests."""
    cases = [c for c in REST_CASES if c[3] in (400, 404, 413)]
    for _case, body, headers, *_ in cases:  # warm up allocator pools and caches
        post(gw, body, headers)
    before = _rss_bytes()
    for i in range(1000):
        _case, body, headers, status, _reason = cases[i % len(cases)]
        assert post(gw, body, headers)[0] == status
    grown = _rss_bytes() - before
    print(f"RSS grew by {grown / 1e6:.1f} MB over 1000 hostile requests")
    assert grown < 20e6
    _valid_request_answers(gw)
