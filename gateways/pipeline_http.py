"""REST front end of the pipeline gateway (aiohttp), spec 5.1 / 5.3 / 5.4.

Status codes: 200 success; 400 bad routing header, bad JSON, or a pipeline error record (body
``"<model> : <error text>"``); 404 a pipeline or model this gateway does not serve (answered at
once, nothing is subscribed for it); 500 gateway failure; 504 when no output arrives within the
request timeout (beyond the reference, which waits forever).
"""
from __future__ import annotations

import logging
import time

from aiohttp import web
from multidict import CIMultiDict

from dataflow import headers as H

from gateways import oip_json, routing
from gateways.metrics import METHOD_REST
from gateways.pipeline_gateway import GatewayTimeout, PipelineGateway, PipelineNotFound, GatewayError
from gateways.routing import Resource, RoutingError

log = logging.getLogger(__name__)

GATEWAY_KEY = web.AppKey("gateway", PipelineGateway)


def _resource(request: web.Request, path_pipeline: str | None = None) -> Resource:
    return routing.resource_from_values(request.headers.getall(H.SELDON_INTERNAL_MODEL, []),
                                        request.headers.getall(H.SELDON_MODEL, []), path_pipeline)


async def _infer(request: web.Request, path_pipeline: str | None) -> web.Response:
    gw: PipelineGateway = request.app[GATEWAY_KEY]
    start = time.perf_counter()
    try:
        resource = _resource(request, path_pipeline)
    except RoutingError as exc:
        log.info("%s", exc)
        return web.Response(status=400)
    code = 500
    try:
        body = await request.read()
        try:
            req = oip_json.request_from_json(body)
        except oip_json.OipJsonError as exc:
            code = 400
            return web.Response(status=400, text=str(exc))
        request_ids = request.headers.getall("X-Request-Id", [])
        try:
            result = await gw.infer(resource, req.SerializeToString(),
                                    routing.caller_headers(request.headers.items()),
                                    request_ids[0] if request_ids else None)
        except GatewayTimeout as exc:
            code = 504
            return web.Response(status=504, text=str(exc))
        except PipelineNotFound as exc:
            code = 404
            return web.Response(status=404, text=str(exc))
        except GatewayError as exc:
            log.warning("infer %s failed: %s", resource.name, exc)
            return web.Response(status=500, text=str(exc))
        out_headers = CIMultiDict()
        out_headers["X-Request-Id"] = result.key
        for k, v in routing.external_headers(result.headers):
            out_headers.add(k, v)
        if result.error is not None:
            code = 400
            return web.Response(status=400, text=result.error, headers=out_headers)
        try:
            payload = oip_json.response_to_json_bytes(result.value)
        except oip_json.OipJsonError as exc:
            return web.Response(status=500, text=str(exc), headers=out_headers)
        code = 200
        out_headers["Content-Type"] = "application/json"
        return web.Response(status=200, body=payload, headers=out_headers)
    finally:
        gw.metrics.observe(resource.name, METHOD_REST, time.perf_counter() - start, str(code),
                           per_pipeline=gw.is_loaded(resource))


async def infer_model_path(request: web.Request) -> web.Response:
    return await _infer(request, None)


async def infer_pipeline_path(request: web.Request) -> web.Response:
    return await _infer(request, request.match_info["name"])


def _ready_status(gw: PipelineGateway, resource: Resource) -> int:
    if not gw.is_loaded(resource):
        return 404
    return 200 if gw.ready(resource) else 424


async def pipeline_ready(request: web.Request) -> web.Response:
    gw: PipelineGateway = request.app[GATEWAY_KEY]
    return web.Response(status=_ready_status(gw, Resource(request.match_info["name"], False)))


async def model_path_ready(request: web.Request) -> web.Response:
    gw: PipelineGateway = request.app[GATEWAY_KEY]
    try:
        resource = _resource(request)
    except RoutingError:
        return web.Response(status=400)
    if resource.is_model:  # the reference ignores model readiness calls
        return web.Response(status=400)
    return web.Response(status=_ready_status(gw, resource))


async def live(_request: web.Request) -> web.Response:
    return web.Response(status=200)


def build_app(gateway: PipelineGateway) -> web.Application:
    app = web.Application(client_max_size=1024 ** 3)
    app[GATEWAY_KEY] = gateway
    app.router.add_post("/v2/models/{name}/infer", infer_model_path)
    app.router.add_post("/v2/pipelines/{name}/infer", infer_pipeline_path)
    app.router.add_get("/v2/pipelines/{name}/ready", pipeline_ready)
    app.router.add_get("/v2/models/{name}/ready", model_path_ready)
    app.router.add_get("/ready", live)
    return app


async def serve(gateway: PipelineGateway, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    runner = web.AppRunner(build_app(gateway), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
