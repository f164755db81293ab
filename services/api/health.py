"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from services.api.typedefs import RUNTIME

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    checks = {"postgres": False, "rabbitmq": runtime.broker.is_connected}
    try:
        checks["postgres"] = await runtime.pool.fetchval("SELECT true", timeout=2) is True
    except Exception:
        checks["postgres"] = False
    ready = all(checks.values())
    return web.json_response({"status": "ready" if ready else "unavailable", "checks": checks},
                             status=200 if ready else 503)
