"""The api application: resources in cleanup_ctx, routes from one module per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.api import (
    dashboard,
    docs,
    events,
    health,
    index,
    jobs,
    jobs_batch,
    metrics,
    parked_sweeper,
    participants,
    ratelimit,
    recurring,
    reports,
    signup_writes,
    system,
    users,
)
from services.api.auth import OPERATOR_ROUTES, auth_middleware, is_protected
from services.api.errors import error_middleware
from services.api.examples import REQUEST_EXAMPLES
from services.api.openapi import ApiRoutes, openapi_document
from services.api.typedefs import RUNTIME, SETTINGS
from shared.kinds import platform_registry
from shared.registry import Registry
from shared.runtime import open_runtime
from shared.settings import Settings


def create_app(settings: Settings, registry: Registry | None = None) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware, auth_middleware],
        # Long query strings reach the handlers and get a 422 naming the field, not the parser's bare 400.
        handler_args={"max_line_size": 65536, "max_field_size": 65536},
    )
    app[SETTINGS] = settings

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(settings, registry or platform_registry()) as runtime:
            app[RUNTIME] = runtime
            yield

    app.cleanup_ctx.append(runtime_ctx)
    signup_writes.install(app)
    parked_sweeper.install(app)
    metrics.install(app)
    api_routes: list[ApiRoutes] = [health.routes, jobs.routes, users.routes, events.routes, participants.routes,
                                   metrics.routes, docs.routes, recurring.routes, system.routes,
                                   index.routes, reports.routes, jobs_batch.routes]
    for group in api_routes:
        app.add_routes(group.table)
    operations = [operation for group in api_routes for operation in group.operations]
    app[OPERATOR_ROUTES] = frozenset((operation.method, operation.path) for operation in operations
                                     if operation.operator)
    ratelimit.install(app)
    document = openapi_document(operations, title="eventjobs", version="0.1.0",
                                needs_auth=lambda operation: is_protected(operation.path),
                                examples=REQUEST_EXAMPLES)

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/api/openapi.json", openapi_json)
    dashboard.setup(app)
    app.add_routes(reports.pages)
    return app

