"""REST front end of the pipeline gateway (aiohttp): the Open Inference Protocol (KServe v2) HTTP
surface, routed and answered as the reference gateway does.

Endpoints: ``POST /v2/models/{name}/infer`` and ``/v2/pipelines/{name}/infer`` (JSON, or the binary
tensor extension: ``Inference-Header-Content-Length``, ``binary_data_size`` inputs,
``binary_data`` / ``binary_data_output`` outputs); ``GET /v2/health/live``, ``/v2/health/ready``,
``/v2`` (server metadata), ``/v2/models/{name}`` and ``/v2/pipelines/{name}`` (metadata),
``.../ready``; ``/ready`` (the reference's). Without a routing header, ``/v2/models/{name}`` names
the resource as ``routing.resource_from_name`` reads it (a bare name is a pipeline).

Status codes: 200 success; 400 a bad request (routing header, body, shapes, headers) or a pipeline
error record (body ``"<model> : <error text>"``); 404 a pipeline or model this gateway does not
serve; 409 a second in-flight request with the same X-Request-Id; 413 over the size limit; 503
transient (no partition assigned yet); 504 no output within the request timeout (the reference
waits forever); 500 anything else. Every error body is one line saying why. Requests are checked
before any Kafka work.
"""
from __future__ import annotations

import logging
import time

from aiohttp import web
from multidict import CIMultiDict

from dataflow import headers as H
from dataflow.oip import json as oip_json
from gateways import pipeline_timeouts, routing
from gateways.metrics import METHOD_REST
from gateways.oip_meta import EXTENSIONS, SERVER_NAME, model_metadata, server_version
from gateways.pipeline_gateway import BadRequest, GatewayError, PipelineGateway, RequestTooLarge, check_request
from gateways.routing import Resource, RoutingError

log = logging.getLogger(__name__)

GATEWAY_KEY = web.AppKey("gateway", PipelineGateway)
HEADER_LENGTH = "Inference-Header-Content-Length"
def _resource(request: web.Request, path_pipeline: str | None = None) -> Resource:
    path_name = None if path_pipeline else request.match_info.get("name")
    return routing.resource_from_values(request.headers.getall(H.SELDON_INTERNAL_MODEL, []),
                                        request.headers.getall(H.SELDON_MODEL, []), path_pipeline, path_name)


def _text(status: int, reason: object, headers=None) -> web.Response:
    """An error answer: one line (a reason never spans lines, whatever raised it)."""
    return web.Response(status=status, text=" ".join(str(reason).split()), headers=headers)


async def _read_request(request: web.Request, gw: PipelineGateway):
    """The body -> (ModelInferRequest, OutputFormat); ``GatewayError`` subclasses for bad input."""
    if request.content_length is not None and request.content_length > gw.max_request_bytes:
        raise RequestTooLarge(f"request body of {request.content_length} bytes is over the gateway's limit "
                              f"of {gw.max_request_bytes} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestTooLarge(f"request body is over the gateway's limit of {gw.max_request_bytes} bytes") from None
    try:
        req, fmt = oip_json.request_from_http(body, request.headers.get(HEADER_LENGTH))
    except oip_json.OipJsonError as exc:
        raise BadRequest(str(exc)) from None
    check_request(req)
    return req, fmt





async def _infer(request: web.Request, path_pipeline: str | None) -> web.Response:
    gw: PipelineGateway = request.app[GATEWAY_KEY]
    start = time.perf_counter()
    try:
        resource = _resource(request, path_pipeline)
    except RoutingError as exc:
        log.info("%s", exc)
        return _text(400, exc)
    code = 500
    try:
        try:
            caller = routing.caller_headers(request.headers.items())
            req, fmt = await _read_request(request, gw)
            request_ids = request.headers.getall("X-Request-Id", [])
            timeout = pipeline_timeouts.request_timeout(request.headers.getall(pipeline_timeouts.TIMEOUT_HEADER, []))
            result = await gw.infer(resource, req.SerializeToString(), caller,
                                    request_ids[0] if request_ids else None, timeout)
        except (routing.BadHeader, pipeline_timeouts.BadTimeout) as exc:
            code = 400
            return _text(400, exc)
        except GatewayError as exc:
            code = exc.http_status
            if code >= 500:
                log.warning("infer %s failed: %s", resource.name, exc)
            return _text(code, exc)
        out_headers: CIMultiDict[str] = CIMultiDict()
        out_headers["X-Request-Id"] = result.key
        for k, v in routing.external_headers(result.headers):
            out_headers.add(k, v)
        if result.error is not None:
            code = 400  # the error record's text as it is, as the reference answers it
            return web.Response(status=400, text=result.error, headers=out_headers)
        try:
            payload, header_length = oip_json.response_to_http(result.value, fmt)
        except oip_json.OipJsonError as exc:
            return _text(500, exc, out_headers)
        code = 200
        if header_length is None:
            out_headers["Content-Type"] = "application/json"
        else:
            out_headers["Content-Type"] = "application/octet-stream"
            out_headers[HEADER_LENGTH] = str(header_length)
        return web.Response(status=200, body=payload, headers=out_headers)
    finally:
        gw.metrics.observe(resource.name, METHOD_REST, time.perf_counter() - start, str(code),
                           per_pipeline=gw.is_loaded(resource))


async def infer_model_path(request: web.Request) -> web.Response:
    return await _infer(request, None)


async def infer_pipeline_path(request: web.Request) -> web.Response:
    return await _infer(request, request.match_info["name"])


async def _ready(gw: PipelineGateway, resource: Resource) -> web.Response:
    """200, or 424 with why not (e.g. a step model the scheduler does not have available)."""
    try:
        if await gw.is_ready(resource):
            return web.Response(status=200)
        return _text(424, gw.not_ready_reason(resource) or "not ready")
    except GatewayError as exc:
        return _text(exc.http_status, exc)


async def pipeline_ready(request: web.Request) -> web.Response:
    return await _ready(request.app[GATEWAY_KEY], Resource(request.match_info["name"], False))


async def model_path_ready(request: web.Request) -> web.Response:
    try:
        resource = _resource(request)
    except RoutingError as exc:
        return _text(400, exc)
    if resource.is_model:  # the reference ignores model readiness calls
        return _text(400, "readiness is answered for pipelines only")
    return await _ready(request.app[GATEWAY_KEY], resource)


async def _metadata(request: web.Request, resource: Resource) -> web.Response:
    gw: PipelineGateway = request.app[GATEWAY_KEY]
    try:
        version = await gw.served_version(resource)
    except GatewayError as exc:
        return _text(exc.http_status, exc)
    return web.json_response(model_metadata(resource, version, *await gw.tensor_metadata(resource)))


async def model_path_metadata(request: web.Request) -> web.Response:
    try:
        resource = _resource(request)
    except RoutingError as exc:
        return _text(400, exc)
    return await _metadata(request, resource)


async def pipeline_metadata(request: web.Request) -> web.Response:
    return await _metadata(request, Resource(request.match_info["name"], False))


async def server_metadata(_request: web.Request) -> web.Response:
    return web.json_response({"name": SERVER_NAME, "version": server_version(), "extensions": EXTENSIONS})


async def live(_request: web.Request) -> web.Response:
    return web.Response(status=200)


async def server_ready(request: web.Request) -> web.Response:
    gw: PipelineGateway = request.app[GATEWAY_KEY]
    return web.Response(status=200 if gw.started else 503)


def build_app(gateway: PipelineGateway) -> web.Application:
    # aiohttp answers 413 itself past client_max_size; _read_request says so earlier from Content-Length.
    app = web.Application(client_max_size=gateway.max_request_bytes)
    app[GATEWAY_KEY] = gateway
    app.router.add_post("/v2/models/{name}/infer", infer_model_path)
    app.router.add_post("/v2/pipelines/{name}/infer", infer_pipeline_path)
    app.router.add_get("/v2/pipelines/{name}/ready", pipeline_ready)
    app.router.add_get("/v2/models/{name}/ready", model_path_ready)
    app.router.add_get("/v2/pipelines/{name}", pipeline_metadata)
    app.router.add_get("/v2/models/{name}", model_path_metadata)
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", server_ready)
    app.router.add_get("/ready", live)
    return app


async def serve(gateway: PipelineGateway, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    runner = web.AppRunner(build_app(gateway), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
