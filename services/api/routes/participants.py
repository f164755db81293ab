"""/api/events/{event_id}/participants: registration, which sends the confirmation email."""

from __future__ import annotations

import uuid
from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from services.api.http.app_keys import RUNTIME
from services.api.http.errors import ApiError
from services.api.http.parsing import parse_body, path_uuid
from services.api.openapi.route_table import UUID_PATH, ApiRoutes
from services.api.routes.events import refuse_if_closed
from services.api.routes.metrics import count_enqueued
from services.api.routes.transactions import write_transaction
from services.api.routes.users import Email, Name
from services.api.security import ratelimit
from shared.db import events as event_queries
from shared.db import participants as participant_queries
from shared.kinds import EMAIL_EVENT_CONFIRMATION

routes = ApiRoutes("participants")


class ParticipantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name  # the display name in the To: header of every email about the event


class ParticipantOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    confirmation_job_id: uuid.UUID | None = None


class ParticipantList(BaseModel):
    items: list[ParticipantOut]


@routes.post("/api/events/{event_id}/participants", summary="Register a participant and send the confirmation",
             body=ParticipantIn, responses={201: ParticipantOut}, errors=(400, 404, 409, 413, 422),
             path_schemas={"event_id": UUID_PATH}, rate_limited=True)
async def register_participant(request: web.Request) -> web.Response:
    ratelimit.check_client(request, ratelimit.limits(request).register_client)
    event_id = path_uuid(request, "event_id", "event")
    body = await parse_body(request, ParticipantIn)
    ratelimit.check_email(request, body.email)
    runtime = request.app[RUNTIME]
    async with write_transaction(runtime) as connection:
        event = await event_queries.share_event(connection, event_id)
        if event is None:
            raise ApiError(404, "not_found", f"no event {event_id}")
        refuse_if_closed(event, "register for it")
        row = await participant_queries.insert_participant(connection, uuid.uuid4(), event_id, body.email, body.name)
        if row is None:
            raise ApiError(409, "conflict", f"{body.email!r} is already registered for this event",
                           [{"field": "email", "message": "is already registered for this event"}])
        job = await runtime.client.enqueue(
            EMAIL_EVENT_CONFIRMATION.name, {"event_id": str(event_id), "participant_id": str(row["id"])},
            connection=connection,
        )
    assert job is not None
    count_enqueued(request.app, job.kind)
    participant = ParticipantOut.model_validate({**dict(row), "confirmation_job_id": job.id})
    return web.json_response(participant.model_dump(mode="json"), status=201)


@routes.get("/api/events/{event_id}/participants", summary="The participants of an event",
            responses={200: ParticipantList}, errors=(404,), path_schemas={"event_id": UUID_PATH}, operator=True)
async def list_participants(request: web.Request) -> web.Response:
    event_id = path_uuid(request, "event_id", "event")
    pool = request.app[RUNTIME].pool
    if await event_queries.get_event(pool, event_id) is None:
        raise ApiError(404, "not_found", f"no event {event_id}")
    rows = await participant_queries.list_participants(pool, event_id)
    result = ParticipantList(items=[ParticipantOut.model_validate(dict(row)) for row in rows])
    return web.json_response(result.model_dump(mode="json"))
