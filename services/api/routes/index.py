"""`/` and `/api/`: where a newcomer lands first; `/api/kinds`: the job kinds and their arguments."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from services.api.http.app_keys import RUNTIME
from services.api.openapi.route_table import ApiRoutes
from shared.kind_catalog import catalog
from shared.runtime import default_retry

routes = ApiRoutes("index")


class LinkOut(BaseModel):
    href: str
    methods: list[str]
    description: str


class IndexOut(BaseModel):
    name: str
    links: dict[str, LinkOut]


class RetryOut(BaseModel):
    max_attempts: int
    delays: list[int]


class KindOut(BaseModel):
    kind: str
    queue_class: str
    service: str
    rabbitmq_queue: str
    timeout_seconds: float
    retry: RetryOut | None
    uses_default_retry: bool
    args_schema: dict[str, Any]
    example_args: dict[str, Any]


class KindListOut(BaseModel):
    kinds: list[KindOut]


LINKS: dict[str, tuple[str, list[str], str]] = {
    "kinds": ("/api/kinds", ["GET"], "job kinds with their arguments' JSON schema, queue class and retry policy"),
    "jobs": ("/api/jobs", ["GET", "POST"], "enqueue (POST) and list jobs"),
    "events": ("/api/events", ["GET", "POST"], "events; creating one schedules its reminders"),
    "users": ("/api/users", ["POST"], "sign-ups (POST); a welcome email is queued"),
    "recurring": ("/api/recurring", ["GET"], "recurring jobs and their schedules"),
    "queues": ("/api/queues", ["GET"], "RabbitMQ queues: depth, consumers, rates"),
    "parking_lot": ("/api/queues/dead", ["GET"], "parked messages with their reasons"),
    "servers": ("/api/servers", ["GET"], "server processes and their heartbeats"),
    "stats": ("/api/stats", ["GET"], "jobs per state"),
    "reports": ("/api/reports", ["GET"], "the daily reports: figures, failures, lateness by kind"),
    "openapi": ("/api/openapi.json", ["GET"], "this API as OpenAPI 3.1"),
    "docs": ("/api/docs", ["GET"], "Swagger UI"),
    "dashboard": ("/jobs", ["GET"], "the operators' dashboard"),
    "metrics": ("/metrics", ["GET"], "Prometheus metrics"),
    "health": ("/healthz", ["GET"], "liveness; /readyz: Postgres and RabbitMQ reachable"),
}


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/jobs")


@routes.get("/api/", summary="Links to the API's resources", responses={200: IndexOut})
async def api_index(request: web.Request) -> web.Response:
    body = IndexOut(name="eventjobs", links={name: LinkOut(href=href, methods=methods, description=description)
                                             for name, (href, methods, description) in LINKS.items()})
    return web.json_response(body.model_dump(mode="json"))


@routes.get("/api/kinds", summary="Job kinds: arguments (JSON schema), queue class, service, retry policy",
            responses={200: KindListOut})
async def list_kinds(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    kinds = catalog(runtime.registry, default_retry(runtime.settings))
    return web.json_response(KindListOut.model_validate({"kinds": kinds}).model_dump(mode="json"))


# `/` is not part of the API: a browser landing there wants the dashboard.
routes.table.get("/")(root)
