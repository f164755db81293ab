"""/jobs/recurring, /jobs/queues and /jobs/servers: what runs the jobs, and when."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from services.api.dashboard.render import render
from services.api.http.app_keys import RUNTIME
from services.api.operations import recurring
from shared import rabbitmq_management as rabbitmq
from shared.db import servers as server_queries
from shared.lifecycle import dead_after

routes = web.RouteTableDef()


NEW_RECURRING = "+new"  # `editing` for the "new recurring job" form (never a valid id: ids start alphanumeric)


async def render_recurring(
    request: web.Request, *, status: int = 200, editing: str | None = None,
    form: Mapping[str, str] | None = None, errors: Mapping[str, str] | None = None,
) -> web.Response:
    """The recurring page; with `editing`, that row's edit form is open showing `form` and `errors`."""
    return render(
        request, "recurring.html", nav="recurring", status=status,
        items=await recurring.list_recurring(request.app[RUNTIME]),
        editing=editing or request.query.get("edit"), form=form or {}, errors=errors or {},
        kinds=sorted(kind.name for kind in request.app[RUNTIME].registry), new_form=NEW_RECURRING,
    )


@routes.get("/jobs/recurring")
async def recurring_page(request: web.Request) -> web.Response:
    return await render_recurring(request)


@routes.get("/jobs/servers")
async def servers_page(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    rows = await server_queries.list_servers(runtime.pool, dead_after(runtime.settings))
    return render(request, "servers.html", nav="servers", servers=rows,
                  dead_after=dead_after(runtime.settings))


@routes.get("/jobs/queues")
async def queues_page(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    error = None
    queues: list[Any] = []
    parked: list[Any] = []
    try:
        management = rabbitmq.Management(runtime.settings)
        queues = await management.queues()
        parked = await management.peek_dead()
    except rabbitmq.ManagementUnavailable as exc:
        error = str(exc)
    return render(request, "queues.html", nav="queues", queues=queues, parked=parked, error=error)
