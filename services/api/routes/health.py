"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from services.api.http.app_keys import RUNTIME
from services.api.openapi.route_table import ApiRoutes
from shared.runtime import unreachable_dependencies

routes = ApiRoutes("health")


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    checks: dict[str, bool]


@routes.get("/healthz", summary="The process is up", responses={200: HealthOut})
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz", summary="Postgres and RabbitMQ are reachable", responses={200: ReadyOut, 503: ReadyOut})
async def readyz(request: web.Request) -> web.Response:
    unreachable = await unreachable_dependencies(request.app[RUNTIME])
    checks = {name: name not in unreachable for name in ("postgres", "rabbitmq")}
    ready = all(checks.values())
    return web.json_response({"status": "ready" if ready else "unavailable", "checks": checks},
                             status=200 if ready else 503)
