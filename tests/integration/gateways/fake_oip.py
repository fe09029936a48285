"""Fake OIP servers for gateway tests: a gRPC servicer and an aiohttp REST app.

Behaviour: every input ``T`` comes back as output ``T`` with numbers + 10 (``add10``-like); an input
named ``BAD`` makes the call fail with INVALID_ARGUMENT / HTTP 400 like MLServer's InferenceError.
"""
from __future__ import annotations

import json
from concurrent import futures

import grpc
from aiohttp import web
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dataflow.oip import json as oip_json

NUMERIC_FIELDS = ("int_contents", "int64_contents", "fp32_contents", "fp64_contents", "uint_contents")


def add10(req: pb.ModelInferRequest) -> pb.ModelInferResponse:
    if req.raw_input_contents:
        req = oip_json.request_from_json(oip_json.request_to_json(req))
    resp = pb.ModelInferResponse(model_name=req.model_name, model_version="1", id=req.id)
    for t in req.inputs:
        o = resp.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        o.contents.CopyFrom(t.contents)
        for f in NUMERIC_FIELDS:
            vals = getattr(o.contents, f)
            if len(vals):
                new = [v + 10 for v in vals]
                del vals[:]
                vals.extend(new)
    return resp


class FakeGrpcModel(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.metadata: list[list[tuple[str, str]]] = []
        self.requests: list[pb.ModelInferRequest] = []
        # model -> its metadata (KServe v2); a model not listed answers NOT_FOUND
        self.model_metadata: dict[str, pb.ModelMetadataResponse] = {}

    def ModelMetadata(self, request, context):
        meta = self.model_metadata.get(request.name)
        if meta is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.name} has no metadata here")
        return meta

    def ModelInfer(self, request, context):
        self.metadata.append(list(context.invocation_metadata()))
        self.requests.append(request)
        if any(t.name == "BAD" for t in request.inputs):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected input 'BAD' for model '{request.model_name}'")
        context.send_initial_metadata([("x-fake-server", "grpc")])
        return add10(request)


def start_grpc(port: int) -> tuple[grpc.Server, FakeGrpcModel]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = FakeGrpcModel()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, servicer


def rest_app() -> web.Application:
    async def infer(request: web.Request) -> web.Response:
        body = await request.json()
        req = oip_json.request_from_json(body, model_name=request.match_info["name"])
        if any(t.name == "BAD" for t in req.inputs):
            return web.json_response({"error": "unexpected input 'BAD'"}, status=400)
        resp = add10(req)
        out = oip_json.response_to_json(resp)
        return web.Response(text=json.dumps(out), content_type="application/json",
                            headers={"x-fake-server": "rest"})

    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", infer)
    return app


async def start_rest(port: int) -> web.AppRunner:
    runner = web.AppRunner(rest_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner
