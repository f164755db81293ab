"""/api/stats, /api/servers, /api/queues: how the whole system is doing, for operators and the dashboard."""

from __future__ import annotations

from aiohttp import web

from services.api.http.app_keys import RUNTIME
from services.api.http.parsing import parse_body
from services.api.openapi.route_table import ApiRoutes
from services.api.openapi.schemas import (
    ParkedMessageOut,
    ParkedMessagesOut,
    ParkedPurgeIn,
    ParkedPurgeOut,
    QueueOut,
    QueuesOut,
    ServerListOut,
    ServerOut,
    StatsOut,
)
from services.api.operations.parking import purge_parked
from services.api.security.redaction import redact_payload, redact_text
from services.api.security.roles import sees_secrets
from shared.db import job_admin, servers
from shared.lifecycle import dead_after
from shared.rabbitmq_management import Management, ManagementUnavailable
from shared.runtime import Runtime

routes = ApiRoutes("system")


async def stats(runtime: Runtime) -> StatsOut:
    """Jobs per state and the number of live server processes."""
    counts = await job_admin.counts_by_state(runtime.pool)
    rows = await servers.list_servers(runtime.pool, dead_after(runtime.settings))
    return StatsOut(**{state.value: count for state, count in counts.items()},
                    servers=sum(1 for row in rows if not row["dead"]))


async def server_list(runtime: Runtime) -> list[ServerOut]:
    """Every process that heartbeats, dead ones (three missed beats) flagged."""
    rows = await servers.list_servers(runtime.pool, dead_after(runtime.settings))
    return [ServerOut.model_validate({name: row[name] for name in ServerOut.model_fields}) for row in rows]


async def queue_overview(runtime: Runtime) -> QueuesOut:
    """Depth, consumers and rates per queue; `available` false with a note when the management API is down."""
    management = Management(runtime.settings)
    try:
        queues = await management.queues()
    except ManagementUnavailable as exc:
        return QueuesOut(available=False, note=f"RabbitMQ management API unavailable: {exc}",
                         management_url=management.ui_url, queues=[])
    return QueuesOut(
        available=True, management_url=management.ui_url,
        queues=[QueueOut.model_validate(queue, from_attributes=True) for queue in queues],
    )


async def parked_messages(runtime: Runtime, count: int = 20) -> ParkedMessagesOut:
    """The head of the parking lot with each message's reason, left in the queue."""
    try:
        parked = await Management(runtime.settings).peek_dead(count)
    except ManagementUnavailable as exc:
        return ParkedMessagesOut(available=False, note=f"RabbitMQ management API unavailable: {exc}", messages=[])
    return ParkedMessagesOut(
        available=True,
        messages=[ParkedMessageOut.model_validate(item, from_attributes=True) for item in parked],
    )


@routes.get("/api/stats", summary="Jobs per state and live servers", responses={200: StatsOut}, errors=(401,))
async def get_stats(request: web.Request) -> web.Response:
    return web.json_response((await stats(request.app[RUNTIME])).model_dump(mode="json"))


@routes.get("/api/servers", summary="Server processes with their heartbeats", responses={200: ServerListOut},
            errors=(401,))
async def get_servers(request: web.Request) -> web.Response:
    body = ServerListOut(await server_list(request.app[RUNTIME]))
    return web.json_response(body.model_dump(mode="json"))


@routes.get("/api/queues", summary="Depth, consumers and rates per RabbitMQ queue", responses={200: QueuesOut},
            errors=(401,))
async def get_queues(request: web.Request) -> web.Response:
    return web.json_response((await queue_overview(request.app[RUNTIME])).model_dump(mode="json"))


@routes.get("/api/queues/dead", summary="Messages at the head of the parking lot, with their reasons",
            responses={200: ParkedMessagesOut}, errors=(401,))
async def get_parked(request: web.Request) -> web.Response:
    parked = await parked_messages(request.app[RUNTIME])
    if not sees_secrets(request):
        parked.messages = [message.model_copy(update={"payload": redact_payload(message.payload),
                                                      "reason": redact_text(message.reason)})
                           for message in parked.messages]
    return web.json_response(parked.model_dump(mode="json"))


@routes.post("/api/queues/dead/purge", summary="Remove parked messages: all, selected by id, or older than",
             body=ParkedPurgeIn, responses={200: ParkedPurgeOut}, errors=(400, 401, 403, 413, 422, 503))
async def post_purge_parked(request: web.Request) -> web.Response:
    purge = await parse_body(request, ParkedPurgeIn)
    removed = await purge_parked(request.app[RUNTIME], purge)
    return web.json_response(ParkedPurgeOut(removed=removed).model_dump(mode="json"))
