"""gRPC front end of the pipeline gateway: ``inference.GRPCInferenceService``, with the
reference gateway's routing, success and error answers.

ModelInfer: the request is forwarded unchanged; the output protobuf is returned unchanged
(raw_output_contents preserved) with the output's ``x-*`` headers as header metadata and
``x-request-id`` = the composite key. A pipeline error record -> UNKNOWN ``"<model> : <text>"``;
gateway failures -> FAILED_PRECONDITION (the reference's code). Beyond the reference, bad input is
refused before any Kafka work: INVALID_ARGUMENT (contents that do not fill the shape, no inputs),
NOT_FOUND (a resource this gateway does not serve), ALREADY_EXISTS (a second in-flight request
with the same x-request-id), RESOURCE_EXHAUSTED (over the size limit, answered by gRPC itself or
by Kafka's message size); UNAVAILABLE when no output partition is assigned yet; DEADLINE_EXCEEDED
past the request timeout.

Without routing metadata the request's ``model_name`` names the resource
(``routing.resource_from_name``: a bare name is a pipeline), so standard clients work unchanged.
ServerLive, ServerReady, ServerMetadata, ModelReady and ModelMetadata are answered; every other
RPC answers UNIMPLEMENTED (without the base servicer's exception, which gRPC logs as an error
with a traceback on every call).
"""
from __future__ import annotations

import logging
import time

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dataflow import headers as H
from gateways import pipeline_timeouts, routing
from gateways.metrics import METHOD_GRPC
from gateways.oip_meta import EXTENSIONS, SERVER_NAME, model_metadata, server_version
from gateways.pipeline_gateway import GatewayError, PipelineGateway, check_request
from gateways.routing import Resource, RoutingError

log = logging.getLogger(__name__)

ANSWERED = ("ModelInfer", "ModelReady", "ModelMetadata", "ServerLive", "ServerReady", "ServerMetadata")


def _metadata(context) -> list[tuple[str, str]]:
    return [(k, v) for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)]


class PipelineInferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, gateway: PipelineGateway) -> None:
        self.gateway = gateway

    @staticmethod
    def _resource(md: list[tuple[str, str]], name: str = "") -> Resource:
        internal = routing.header_values(md, H.SELDON_INTERNAL_MODEL)
        model = routing.header_values(md, H.SELDON_MODEL)
        if not internal and not model:
            if name:
                return routing.resource_from_name(name)
            raise RoutingError(f"failed to find any metadata - required {H.SELDON_MODEL} or {H.SELDON_INTERNAL_MODEL}")
        try:
            return routing.resource_from_values(internal, model)
        except RoutingError:
            found = (internal or model)[-1 if internal else 0]
            raise RoutingError(f"failed to find valid header {H.SELDON_MODEL}, found {found}") from None

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext):
        start = time.perf_counter()
        md = _metadata(context)
        try:
            resource = self._resource(md, request.model_name)
        except RoutingError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        code = grpc.StatusCode.FAILED_PRECONDITION
        try:
            request_ids = routing.header_values(md, H.REQUEST_ID)
            try:
                caller = routing.caller_headers(md)
                timeout = pipeline_timeouts.request_timeout(routing.header_values(md, pipeline_timeouts.TIMEOUT_HEADER))
                check_request(request)
                result = await self.gateway.infer(resource, request.SerializeToString(), caller,
                                                  request_ids[-1] if request_ids else None, timeout)
            except (routing.BadHeader, pipeline_timeouts.BadTimeout) as exc:
                code = grpc.StatusCode.INVALID_ARGUMENT
                await context.abort(code, str(exc))
            except GatewayError as exc:
                code = grpc.StatusCode[exc.grpc_code]
                await context.abort(code, str(exc))
            await context.send_initial_metadata(routing.grpc_response_metadata(result.headers, result.key))
            if result.error is not None:
                code = grpc.StatusCode.UNKNOWN
                await context.abort(code, result.error)
            resp = pb.ModelInferResponse()
            try:
                resp.ParseFromString(result.value)
            except Exception as exc:
                await context.abort(code, f"output is not a ModelInferResponse: {exc}")
            code = grpc.StatusCode.OK
            return resp
        finally:
            self.gateway.metrics.observe(resource.name, METHOD_GRPC, time.perf_counter() - start, code.name,
                                         per_pipeline=self.gateway.is_loaded(resource))

    async def _named(self, name: str, context: grpc.aio.ServicerContext) -> Resource:
        try:
            return self._resource(_metadata(context), name)
        except RoutingError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext):
        resource = await self._named(request.name, context)
        try:
            return pb.ModelReadyResponse(ready=await self.gateway.is_ready(resource))
        except GatewayError as exc:
            await context.abort(grpc.StatusCode[exc.grpc_code], str(exc))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext):
        resource = await self._named(request.name, context)
        try:
            version = await self.gateway.served_version(resource)
        except GatewayError as exc:
            await context.abort(grpc.StatusCode[exc.grpc_code], str(exc))
        meta = model_metadata(resource, version, *await self.gateway.tensor_metadata(resource))

        def tensors(ts):
            return [pb.ModelMetadataResponse.TensorMetadata(name=t.get("name", ""), datatype=t.get("datatype", ""),
                                                            shape=t.get("shape", [])) for t in ts]

        return pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                        inputs=tensors(meta["inputs"]), outputs=tensors(meta["outputs"]))

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.gateway.started)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=server_version(), extensions=EXTENSIONS)


def _unimplemented(name: str):
    async def method(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not supported by the pipeline gateway")
    method.__name__ = name
    return method


for _name in dir(pb_grpc.GRPCInferenceServiceServicer):
    if not _name.startswith("_") and _name not in ANSWERED:
        setattr(PipelineInferenceServicer, _name, _unimplemented(_name))


async def serve(gateway: PipelineGateway, port: int, host: str = "0.0.0.0") -> grpc.aio.Server:
    # gRPC itself answers RESOURCE_EXHAUSTED past the gateway's request size limit.
    limit = min(gateway.max_request_bytes, 2**31 - 1)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_concurrent_streams", 1_000_000),
    ])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(PipelineInferenceServicer(gateway), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise GatewayError(f"cannot bind gRPC port {host}:{port}")
    await server.start()
    return server
