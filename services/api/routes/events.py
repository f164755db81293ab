"""/api/events: events that schedule their own reminder jobs, in the same transaction as the event."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from aiohttp import web
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from services.api.http.app_keys import RUNTIME
from services.api.http.errors import ApiError, invalid_fields
from services.api.http.parsing import idempotency_key_header, parse_body, parse_query, path_uuid
from services.api.openapi.route_table import IDEMPOTENCY_KEY, UUID_PATH, ApiRoutes
from services.api.routes.metrics import count_enqueued
from services.api.routes.transactions import write_transaction
from services.api.routes.users import Name
from shared.client import JobClient
from shared.db import events as event_queries
from shared.db import job_admin as job_queries
from shared.db.cursor import Cursor, InvalidCursor
from shared.registry import Registry
from shared.runtime import Runtime

routes = ApiRoutes("events")

# Far enough from datetime's limits that start - 1 day and every offset stay representable.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def in_utc(value: datetime) -> datetime:
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"must be between {EARLIEST.date()} and {LATEST.date()}")
    return value.astimezone(UTC)


def iso_text(value: Any) -> Any:
    """JSON numbers are not times here: pydantic would read 0 as 1970, hiding a client's mistake."""
    if not isinstance(value, (str, datetime)):
        raise ValueError("must be an ISO 8601 date-time string with an offset")
    return value


def not_in_the_past(value: datetime) -> datetime:
    """An event that has already started can have no reminders and no one can still come: a typo, refused."""
    if value <= datetime.now(UTC):
        raise ValueError(f"must be in the future (it is {value.isoformat()}, now is "
                         f"{datetime.now(UTC).replace(microsecond=0).isoformat()})")
    return value


def iana_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"must be an IANA time zone, like Europe/Berlin or UTC (not {value[:100]!r})") from None
    return value


# The zone an event's emails show its times in; left out, SCHEDULER_TIMEZONE's.
Timezone = Annotated[str, Field(min_length=1, max_length=100, description="IANA time zone, like Europe/Berlin"),
                     AfterValidator(iana_zone)]


# Naive times are refused: no guessing a zone.
EventTime = Annotated[AwareDatetime, BeforeValidator(iso_text), AfterValidator(in_utc)]
Title = Name  # one header line: it goes into reminder subjects
NO_NUL = r"^[^\x00]*$"  # Postgres text cannot hold NUL
Description = Annotated[str, Field(max_length=10_000, pattern=NO_NUL)]
Location = Annotated[str, Field(max_length=500, pattern=NO_NUL)]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    description: Description | None = None
    location: Location | None = None
    starts_at: EventTime
    ends_at: EventTime | None = None
    timezone: Timezone | None = None

    @field_validator("starts_at")
    @classmethod
    def _in_the_future(cls, value: datetime) -> datetime:
        return not_in_the_past(value)

    @field_validator("ends_at")
    @classmethod
    def _ends_after_start(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        starts_at = info.data.get("starts_at")
        if value is not None and starts_at is not None and value < starts_at:
            raise ValueError("must not be before starts_at")
        return value


def _not_nullable(schema: dict[str, Any]) -> None:
    """title, starts_at and timezone may be left out of a PATCH but not nulled: the schema says so too."""
    for name in ("title", "starts_at", "timezone"):
        prop = schema["properties"][name]
        prop.update(next(option for option in prop.pop("anyOf") if option.get("type") != "null"))
        prop.pop("default", None)


class EventPatch(BaseModel):
    """Only the fields sent change; `null` clears description, location or ends_at."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_not_nullable)

    title: Title | None = None
    description: Description | None = None
    location: Location | None = None
    starts_at: EventTime | None = None
    ends_at: EventTime | None = None
    timezone: Timezone | None = None

    @field_validator("title", "starts_at", "timezone")
    @classmethod
    def _required_if_sent(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out but not set to null")
        return value

    @field_validator("starts_at")
    @classmethod
    def _moved_into_the_future(cls, value: datetime) -> datetime:
        return not_in_the_past(value)


class EventJobOut(BaseModel):
    id: uuid.UUID
    kind: str
    state: str
    run_at: datetime


class EventOut(BaseModel):
    id: uuid.UUID
    title: str
    description: str | None
    location: str | None
    starts_at: datetime
    ends_at: datetime | None
    timezone: str | None = Field(None, description="the zone its emails show times in; null: the server's "
                                                     "SCHEDULER_TIMEZONE")
    cancelled_at: datetime | None
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime
    scheduled_jobs: list[EventJobOut] = Field(description="the reminder jobs of the event that are not deleted")


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class EventListQuery(BaseModel):
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(min_length=1, max_length=200)] | None = None


@dataclass(frozen=True)
class PlannedJob:
    kind: str
    run_at: datetime
    idempotency_key: str


def plan_jobs(
    event_id: uuid.UUID, starts_at: datetime, revision: int, now: datetime, schedule: list[tuple[str, timedelta]]
) -> list[PlannedJob]:
    """The jobs of `schedule` (the kinds declared `before_event`) an event starting at `starts_at` still needs;
    a time already past is skipped.

    The keys derive from (event, kind, start, revision): a retried write finds the job it made
    instead of adding one, and a move back to an earlier start (new revision) is not mistaken for it.
    """
    start = starts_at.astimezone(UTC).isoformat()
    return [
        PlannedJob(kind, starts_at - before, f"event:{event_id}:{kind}:{start}:r{revision}")
        for kind, before in schedule
        if starts_at - before > now
    ]


async def schedule_jobs(client: JobClient, connection: asyncpg.Connection, event: asyncpg.Record) -> list[str]:
    """Write the event's jobs in the caller's transaction; returns the kinds newly created."""
    created = []
    for planned in plan_jobs(event["id"], event["starts_at"], event["schedule_revision"], datetime.now(UTC),
                             client.registry.event_schedule()):
        args = {"event_id": str(event["id"]), "starts_at": event["starts_at"].isoformat(),
                "schedule_revision": event["schedule_revision"]}
        job = await client.enqueue(planned.kind, args, run_at=planned.run_at,
                                   idempotency_key=planned.idempotency_key, connection=connection)
        if job is not None and job.created:
            created.append(job.kind)
    return created


async def delete_pending_jobs(
    connection: asyncpg.Connection, registry: Registry, event_id: uuid.UUID, reason: str
) -> None:
    pending = await event_queries.pending_event_jobs(connection, event_id, registry.event_kinds())
    if pending:
        await job_queries.delete(connection, pending, reason)


async def render(runtime: Runtime, rows: list[asyncpg.Record]) -> list[EventOut]:
    jobs = await event_queries.event_jobs(runtime.pool, [row["id"] for row in rows], runtime.registry.event_kinds())
    by_event: dict[uuid.UUID, list[EventJobOut]] = {}
    for job in jobs:
        by_event.setdefault(job["event_id"], []).append(EventJobOut.model_validate(dict(job)))
    return [
        EventOut.model_validate({**{name: row[name] for name in EventOut.model_fields if name in row.keys()},
                                 "scheduled_jobs": by_event.get(row["id"], [])})
        for row in rows
    ]


def event_response(event: EventOut, status: int = 200) -> web.Response:
    return web.json_response(event.model_dump(mode="json"), status=status)


def decode_cursor(token: str) -> Cursor:
    try:
        return Cursor.decode(token)
    except InvalidCursor:
        raise ApiError(422, "validation_error", "invalid query parameter cursor",
                       [{"field": "query.cursor", "message": "is not a cursor this API returned"}]) from None


def refuse_if_closed(event: asyncpg.Record, action: str) -> None:
    for column, word in (("cancelled_at", "cancelled"), ("archived_at", "archived")):
        if event[column] is not None:
            raise ApiError(409, f"event_{word}", f"cannot {action}: the event is {word}",
                           [{"field": "event_id", "message": f"the event is {word}"}])


@routes.post("/api/events", summary="Create an event and schedule its reminders", body=EventIn,
             responses={201: EventOut, 200: EventOut}, errors=(400, 409, 413, 422), headers=[IDEMPOTENCY_KEY],
             operator=True)
async def create_event(request: web.Request) -> web.Response:
    body = await parse_body(request, EventIn)
    key = idempotency_key_header(request)
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest() if key else None
    runtime = request.app[RUNTIME]
    created: list[str] = []
    replayed = False
    async with write_transaction(runtime) as connection:
        fields = body.model_dump()
        fields["timezone"] = body.timezone or runtime.settings.scheduler_timezone
        row = await event_queries.insert_event(connection, uuid.uuid4(), fields,
                                               idempotency_key=key, fingerprint=fingerprint)
        if row is None:  # the key was used before: a retry gets the first answer, other content a 409
            assert key is not None
            row = await event_queries.find_by_idempotency_key(connection, key)
            if row is None or row["request_fingerprint"] != fingerprint:
                raise ApiError(409, "idempotency_conflict",
                               "this Idempotency-Key was used for an event with other content",
                               [{"field": "Idempotency-Key", "message": "already used with other content"}])
            replayed = True
        else:
            created = await schedule_jobs(runtime.client, connection, row)
    for kind in created:
        count_enqueued(request.app, kind)
    [event] = await render(runtime, [row])
    return event_response(event, 200 if replayed else 201)


@routes.get("/api/events", summary="Events by start time, a page at a time", query=EventListQuery,
            responses={200: EventPage}, errors=(422,), operator=True)
async def list_events(request: web.Request) -> web.Response:
    query = parse_query(request, EventListQuery)
    after = decode_cursor(query.cursor) if query.cursor else None
    runtime = request.app[RUNTIME]
    rows = await event_queries.list_events(runtime.pool, after=after, limit=query.limit + 1)
    page, more = rows[: query.limit], len(rows) > query.limit
    last = Cursor(page[-1]["starts_at"], page[-1]["id"]) if more else None
    result = EventPage(items=await render(runtime, page), next_cursor=last.encode() if last else None)
    return web.json_response(result.model_dump(mode="json"))


@routes.get("/api/events/{event_id}", summary="An event with its scheduled jobs", responses={200: EventOut},
            errors=(404,), path_schemas={"event_id": UUID_PATH})
async def get_event(request: web.Request) -> web.Response:
    event_id = path_uuid(request, "event_id", "event")
    runtime = request.app[RUNTIME]
    row = await event_queries.get_event(runtime.pool, event_id)
    if row is None:
        raise ApiError(404, "not_found", f"no event {event_id}")
    [event] = await render(runtime, [row])
    return event_response(event)


@routes.patch("/api/events/{event_id}", summary="Edit an event; moving its start reschedules its reminders",
              body=EventPatch, responses={200: EventOut}, errors=(400, 404, 409, 413, 422),
              path_schemas={"event_id": UUID_PATH}, operator=True)
async def patch_event(request: web.Request) -> web.Response:
    event_id = path_uuid(request, "event_id", "event")
    changes = (await parse_body(request, EventPatch)).model_dump(exclude_unset=True)
    runtime = request.app[RUNTIME]
    created: list[str] = []
    async with write_transaction(runtime) as connection:
        row = await event_queries.lock_event(connection, event_id)
        if row is None:
            raise ApiError(404, "not_found", f"no event {event_id}")
        refuse_if_closed(row, "edit it")
        starts_at, ends_at = changes.get("starts_at", row["starts_at"]), changes.get("ends_at", row["ends_at"])
        if ends_at is not None and ends_at < starts_at:
            field = "ends_at" if "ends_at" in changes else "starts_at"
            raise invalid_fields([{"field": field, "message": "ends_at must not be before starts_at"}])
        moved = starts_at != row["starts_at"]
        if moved:
            await delete_pending_jobs(connection, runtime.registry, event_id,
                                      f"event moved from {row['starts_at'].isoformat()} to {starts_at.isoformat()}")
        if changes:
            row = await event_queries.update_event(connection, event_id, changes, reschedule=moved)
        if moved:
            created = await schedule_jobs(runtime.client, connection, row)
    for kind in created:
        count_enqueued(request.app, kind)
    [event] = await render(runtime, [row])
    return event_response(event)


@routes.post("/api/events/{event_id}/cancel", summary="Cancel an event and delete its pending reminders",
             responses={200: EventOut}, errors=(404, 409), path_schemas={"event_id": UUID_PATH}, operator=True)
async def cancel_event(request: web.Request) -> web.Response:
    event_id = path_uuid(request, "event_id", "event")
    runtime = request.app[RUNTIME]
    async with write_transaction(runtime) as connection:
        row = await event_queries.lock_event(connection, event_id)
        if row is None:
            raise ApiError(404, "not_found", f"no event {event_id}")
        if row["archived_at"] is not None:
            refuse_if_closed(row, "cancel it")
        if row["cancelled_at"] is None:  # cancelling twice is not an error: the second changes nothing
            await delete_pending_jobs(connection, runtime.registry, event_id, "event cancelled")
            row = await event_queries.cancel_event(connection, event_id)
    [event] = await render(runtime, [row])
    return event_response(event)
