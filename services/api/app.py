"""The api application: resources in cleanup_ctx, routes from one module per resource.

The parts: routes/ (the JSON API, one module per resource), dashboard/ (/jobs), security/ (who may call what),
openapi/ (models, the document, Swagger UI), http/ (errors, parsing, app keys), operations/ (actions the routes and
the dashboard share), background/ (tasks beside the requests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.api.background import parked_sweeper
from services.api.dashboard import pages as dashboard_pages
from services.api.http.app_keys import RUNTIME, SETTINGS
from services.api.http.errors import error_middleware
from services.api.openapi import swagger_ui
from services.api.openapi.document import openapi_document
from services.api.openapi.examples import REQUEST_EXAMPLES
from services.api.openapi.route_table import ApiRoutes
from services.api.operations import signups
from services.api.routes import (
    events,
    health,
    index,
    jobs,
    jobs_batch,
    metrics,
    participants,
    recurring,
    reports,
    system,
    users,
)
from services.api.security import ratelimit
from services.api.security.access import OPERATOR_ROUTES, is_protected
from services.api.security.auth import auth_middleware
from shared.kinds import platform_registry
from shared.registry import Registry
from shared.runtime import open_runtime
from shared.settings import Settings


def create_app(settings: Settings, registry: Registry | None = None) -> web.Application:
    registry = registry or platform_registry()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware, auth_middleware],
        # Long query strings reach the handlers and get a 422 naming the field, not the parser's bare 400.
        handler_args={"max_line_size": 65536, "max_field_size": 65536},
    )
    app[SETTINGS] = settings

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(settings, registry) as runtime:
            app[RUNTIME] = runtime
            yield

    app.cleanup_ctx.append(runtime_ctx)
    signups.install(app)
    parked_sweeper.install(app)
    metrics.install(app)
    api_routes: list[ApiRoutes] = [health.routes, jobs.routes, users.routes, events.routes, participants.routes,
                                   metrics.routes, swagger_ui.routes, recurring.routes, system.routes,
                                   index.routes, reports.routes, jobs_batch.routes]
    for group in api_routes:
        app.add_routes(group.table)
    operations = [operation for group in api_routes for operation in group.operations]
    app[OPERATOR_ROUTES] = frozenset((operation.method, operation.path) for operation in operations
                                     if operation.operator)
    ratelimit.install(app)
    document = openapi_document(operations, title="eventjobs", version="0.1.0",
                                needs_auth=lambda operation: is_protected(operation.path),
                                examples=REQUEST_EXAMPLES, kinds=[kind.name for kind in registry])

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/api/openapi.json", openapi_json)
    dashboard_pages.setup(app)
    return app

