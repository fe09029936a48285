"""gRPC front end of the pipeline gateway: ``inference.GRPCInferenceService`` (spec 5.1 / 5.3 / 5.4).

ModelInfer: the request is forwarded unchanged; the output protobuf is returned unchanged
(raw_output_contents preserved) with the output's ``x-*`` headers as header metadata and
``x-request-id`` = the composite key. A pipeline error record -> UNKNOWN ``"<model> : <text>"``;
gateway failures -> FAILED_PRECONDITION; a pipeline or model this gateway does not serve -> NOT_FOUND
at once; request timeout -> DEADLINE_EXCEEDED (beyond the reference).
ModelReady and ServerReady are answered; every other RPC is UNIMPLEMENTED (the base servicer).
"""
from __future__ import annotations

import logging
import time

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dataflow import headers as H

from gateways import routing
from gateways.metrics import METHOD_GRPC
from gateways.pipeline_gateway import GatewayError, GatewayTimeout, PipelineGateway, PipelineNotFound
from gateways.routing import Resource, RoutingError

log = logging.getLogger(__name__)

MAX_MESSAGE = 1000 * 1024 * 1024


class PipelineInferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, gateway: PipelineGateway) -> None:
        self.gateway = gateway

    @staticmethod
    def _resource(md: list[tuple[str, str]]) -> Resource:
        internal = routing.header_values(md, H.SELDON_INTERNAL_MODEL)
        model = routing.header_values(md, H.SELDON_MODEL)
        if not internal and not model:
            raise RoutingError(f"failed to find any metadata - required {H.SELDON_MODEL} or {H.SELDON_INTERNAL_MODEL}")
        try:
            return routing.resource_from_values(internal, model)
        except RoutingError:
            found = (internal or model)[-1 if internal else 0]
            raise RoutingError(f"failed to find valid header {H.SELDON_MODEL}, found {found}") from None

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext):
        start = time.perf_counter()
        md = [(k, v) for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)]
        try:
            resource = self._resource(md)
        except RoutingError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        code = grpc.StatusCode.FAILED_PRECONDITION
        try:
            request_ids = routing.header_values(md, H.REQUEST_ID)
            try:
                result = await self.gateway.infer(resource, request.SerializeToString(),
                                                  routing.caller_headers(md),
                                                  request_ids[-1] if request_ids else None)
            except GatewayTimeout as exc:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                await context.abort(code, str(exc))
            except PipelineNotFound as exc:
                code = grpc.StatusCode.NOT_FOUND
                await context.abort(code, str(exc))
            except GatewayError as exc:
                await context.abort(code, str(exc))
            await context.send_initial_metadata(routing.grpc_response_metadata(result.headers, result.key))
            if result.error is not None:
                code = grpc.StatusCode.UNKNOWN
                await context.abort(code, result.error)
            resp = pb.ModelInferResponse()
            try:
                resp.ParseFromString(result.value)
            except Exception as exc:  # noqa: BLE001 - protobuf DecodeError
                await context.abort(code, f"output is not a ModelInferResponse: {exc}")
            code = grpc.StatusCode.OK
            return resp
        finally:
            self.gateway.metrics.observe(resource.name, METHOD_GRPC, time.perf_counter() - start, code.name,
                                         per_pipeline=self.gateway.is_loaded(resource))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext):
        resource = Resource(request.name, False)
        if not self.gateway.is_loaded(resource):
            await context.abort(grpc.StatusCode.NOT_FOUND, "Pipeline not found")
        return pb.ModelReadyResponse(ready=self.gateway.ready(resource))

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)


async def serve(gateway: PipelineGateway, port: int, host: str = "0.0.0.0") -> grpc.aio.Server:
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_concurrent_streams", 1_000_000),
    ])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(PipelineInferenceServicer(gateway), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise GatewayError(f"cannot bind gRPC port {host}:{port}")
    await server.start()
    return server
