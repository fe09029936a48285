"""Health endpoints (reference port 8000 in k8s): /live, /ready (subscribed to the scheduler),
/startup (engine initialised), and /metrics (Prometheus text, ``dataflow.engine.metrics``) when a
registry is given. Small on purpose: probes and one scrape endpoint."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:  # prometheus_client is imported when a registry is served
    from prometheus_client import CollectorRegistry


async def start_health_server(port: int, *, ready: Callable[[], bool], started: Callable[[], bool],
                              host: str = "0.0.0.0", registry: CollectorRegistry | None = None) -> web.AppRunner:
    def probe(check: Callable[[], bool]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_request: web.Request) -> web.Response:
            ok = check()
            return web.json_response({"ok": ok}, status=200 if ok else 503)
        return handler

    app = web.Application()
    app.router.add_get("/live", probe(lambda: True))
    app.router.add_get("/ready", probe(ready))
    app.router.add_get("/startup", probe(started))
    if registry is not None:
        async def metrics(_request: web.Request) -> web.Response:
            body = generate_latest(registry)   # reads in-memory counters: no I/O
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
