"""/api/recurring: list recurring jobs with their next and last run, trigger one now, pause, resume, edit."""

from __future__ import annotations

from aiohttp import web

from services.api.http.app_keys import RUNTIME
from services.api.http.parsing import parse_body
from services.api.openapi.route_table import ApiRoutes
from services.api.openapi.schemas import JobOut, RecurringListOut, RecurringOut, RecurringPatch, RecurringPut
from services.api.operations import recurring
from services.api.security.redaction import redact
from services.api.security.roles import sees_secrets
from shared.db import jobs as job_queries

routes = ApiRoutes("recurring")


@routes.get("/api/recurring", summary="Recurring jobs: cron, time zone, next and last run",
            responses={200: RecurringListOut}, errors=(401,))
async def list_recurring(request: web.Request) -> web.Response:
    views = await recurring.list_recurring(request.app[RUNTIME])
    if not sees_secrets(request):
        views = [view.model_copy(update={"args": redact(view.args)}) for view in views]
    body = RecurringListOut(views)
    return web.json_response(body.model_dump(mode="json"))


@routes.post("/api/recurring/{recurring_id}/trigger", summary="Enqueue one run of a recurring job now",
             responses={202: JobOut}, errors=(401, 403, 404, 409))
async def trigger(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    job = await recurring.trigger_recurring(runtime, request.match_info["recurring_id"])
    row = await job_queries.get_job(runtime.pool, job.id)
    assert row is not None
    return web.json_response(JobOut.from_row(row).model_dump(mode="json"), status=202)


@routes.patch("/api/recurring/{recurring_id}", summary="Edit cron or time zone, pause or resume a recurring job",
              body=RecurringPatch, responses={200: RecurringOut}, errors=(400, 401, 403, 404, 422))
async def patch(request: web.Request) -> web.Response:
    body = await parse_body(request, RecurringPatch)
    view = await recurring.update_recurring(
        request.app[RUNTIME], request.match_info["recurring_id"], cron=body.cron, timezone=body.timezone,
        enabled=body.enabled,
    )
    return web.json_response(view.model_dump(mode="json"))


@routes.put("/api/recurring/{recurring_id}",
            summary="Create or replace a recurring job (kind, args, cron, time zone, misfire policy, queue)",
            body=RecurringPut, responses={201: RecurringOut, 200: RecurringOut}, errors=(400, 401, 403, 422))
async def put(request: web.Request) -> web.Response:
    body = await parse_body(request, RecurringPut)
    view, created = await recurring.put_recurring(request.app[RUNTIME], request.match_info["recurring_id"], body)
    return web.json_response(view.model_dump(mode="json"), status=201 if created else 200)


@routes.delete("/api/recurring/{recurring_id}", summary="Remove a recurring job; it never fires again",
               responses={204: None}, errors=(401, 403, 404))
async def delete(request: web.Request) -> web.Response:
    await recurring.delete_recurring(request.app[RUNTIME], request.match_info["recurring_id"])
    return web.Response(status=204)
