"""The Queues page's purge of the parking lot: all, the ticked messages, or those older than N hours."""

from __future__ import annotations

from aiohttp import web

from services.api.http.app_keys import RUNTIME
from services.api.http.errors import ApiError
from services.api.openapi.schemas import ParkedPurgeIn
from services.api.operations.parking import purge_parked

routes = web.RouteTableDef()


@routes.post("/jobs/queues/purge")
async def purge(request: web.Request) -> web.Response:
    form = await request.post()
    action = str(form.get("do", ""))
    if action == "all":
        choice = ParkedPurgeIn(all=True)
    elif action == "selected":
        ids = [str(value) for value in form.getall("id", []) if str(value)]
        if not ids:
            raise ApiError(422, "validation_error", "no parked message selected: tick them first",
                           [{"field": "id", "message": "tick the messages to purge first"}])
        choice = ParkedPurgeIn(ids=ids[:10_000])
    elif action == "older":
        hours = str(form.get("older_than_hours", "")).strip()
        if not hours.isdigit() or int(hours) > 10 * 366 * 24:
            raise ApiError(422, "validation_error", "older than: a whole number of hours",
                           [{"field": "older_than_hours", "message": "must be a whole number of hours"}])
        choice = ParkedPurgeIn(older_than_seconds=int(hours) * 3600)
    else:
        raise ApiError(422, "validation_error", "choose purge all, selected or older",
                       [{"field": "do", "message": "must be all, selected or older"}])
    removed = await purge_parked(request.app[RUNTIME], choice)
    return web.Response(status=303, headers={"Location": f"/jobs/queues?done=purged&n={removed}#parking-lot"})
