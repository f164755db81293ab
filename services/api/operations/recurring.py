"""Recurring jobs as operators manage them: list, trigger one run now, pause, resume, edit, create, delete.

Failures are ApiErrors (404 unknown, 409 cannot run here, 422 bad value naming the field); the schedulers
pick up every change by NOTIFY. The SQL is shared/db/recurring.py's.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from services.api.http.errors import ApiError, invalid_fields
from services.api.openapi.schemas import RECURRING_ID_PATTERN, RecurringOut, RecurringPut
from shared.client import EnqueuedJob
from shared.cron import InvalidSchedule, Schedule, parse_cron
from shared.db import recurring as recurring_queries
from shared.registry import InvalidJobArguments, UnknownJobKind
from shared.runtime import Runtime


class NotFound(ApiError):
    def __init__(self, recurring_id: str) -> None:
        super().__init__(404, "not_found", f"no recurring job {recurring_id!r}",
                         [{"field": "recurring_id", "message": "not found"}])


def check_schedule(cron: str, timezone: str, field: str = "cron") -> Schedule:
    """The schedule for 5 crontab fields (or 6, seconds first) in `timezone`, or a 422 naming `field`.

    An unknown zone is a 422 naming `timezone` whatever `field` is: that is where the operator must look.
    Both are checked, so a bad zone does not hide a bad cron expression.
    """
    problems: list[dict[str, str]] = []
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        problems.append({"field": "timezone",
                         "message": f"unknown IANA time zone {timezone!r} (a name like Europe/Berlin or UTC)"})
        timezone = "UTC"  # only to check the cron expression on its own
    schedule: Schedule | None = None
    try:
        schedule = parse_cron(cron, timezone)
    except (InvalidSchedule, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        problems.append({"field": field, "message": str(exc) or f"invalid cron expression {cron!r}"})
    if schedule is not None and schedule.next_after(datetime.now(UTC)) is None:
        problems.append({"field": field, "message": f"cron expression {cron!r} never fires"})
    if problems or schedule is None:
        raise invalid_fields(problems)
    return schedule


def _view(row: asyncpg.Record, now: datetime) -> RecurringOut:
    next_run: datetime | None = None
    error: str | None = None
    if row["enabled"]:
        try:
            next_run = parse_cron(row["cron"], row["timezone"]).next_after(now)
        except (InvalidSchedule, ValueError) as exc:
            error = str(exc)
    return RecurringOut(
        id=row["id"], kind=row["kind"], args=row["args"], cron=row["cron"], timezone=row["timezone"],
        misfire_policy=row["misfire_policy"], enabled=row["enabled"], next_run=next_run,
        last_fire_time=row["last_fire_time"], last_job_id=row["last_job_id"], last_job_state=row["last_job_state"],
        last_run_at=row["last_run_at"], schedule_error=error, queue=row["queue"],
    )


async def list_recurring(runtime: Runtime) -> list[RecurringOut]:
    """Every recurring job by id, with its next run computed in its own time zone."""
    now = datetime.now(UTC)
    return [_view(row, now) for row in await recurring_queries.list_overview(runtime.pool)]


async def get_recurring(runtime: Runtime, recurring_id: str) -> RecurringOut:
    """One recurring job; 404 when there is none with this id."""
    row = await recurring_queries.get_overview(runtime.pool, recurring_id)
    if row is None:
        raise NotFound(recurring_id)
    return _view(row, datetime.now(UTC))


async def trigger_recurring(runtime: Runtime, recurring_id: str) -> EnqueuedJob:
    """Enqueue one run now, outside the schedule (fire_time NULL, so it never collides with an occurrence)."""
    row = await recurring_queries.get_job_template(runtime.pool, recurring_id)
    if row is None:
        raise NotFound(recurring_id)
    try:
        job = await runtime.client.enqueue(row["kind"], row["args"], recurring_id=recurring_id, queue=row["queue"])
    except (UnknownJobKind, InvalidJobArguments) as exc:
        raise ApiError(409, "cannot_trigger", f"recurring job {recurring_id!r} cannot run here: {exc}",
                       [{"field": "kind", "message": str(exc)}]) from None
    assert job is not None  # fire_time NULL never collides
    return job


async def update_recurring(
    runtime: Runtime, recurring_id: str, *, cron: str | None = None, timezone: str | None = None,
    enabled: bool | None = None,
) -> RecurringOut:
    """Change cron, time zone and/or enabled (pause/resume); the schedulers pick it up by NOTIFY."""
    current = await recurring_queries.get_schedule(runtime.pool, recurring_id)
    if current is None:
        raise NotFound(recurring_id)
    if cron is not None or timezone is not None:
        check_schedule(cron if cron is not None else current["cron"],
                       timezone if timezone is not None else current["timezone"],
                       field="cron" if cron is not None else "timezone")
    await recurring_queries.update_schedule(runtime.pool, recurring_id, cron, timezone, enabled)
    return await get_recurring(runtime, recurring_id)


async def set_recurring_enabled(runtime: Runtime, recurring_id: str, enabled: bool) -> RecurringOut:
    """Pause (False) or resume (True) a recurring job."""
    return await update_recurring(runtime, recurring_id, enabled=enabled)


async def put_recurring(runtime: Runtime, recurring_id: str, definition: RecurringPut) -> tuple[RecurringOut, bool]:
    """Create or replace a whole definition (True: created); the schedulers pick it up by NOTIFY at once.

    Replacing keeps its last fire time, so the misfire policy still knows what already ran.
    """
    if not re.fullmatch(RECURRING_ID_PATTERN, recurring_id):
        raise invalid_fields([{"field": "recurring_id", "message": "1-100 letters, digits or . _ : -, "
                                                                   "starting with a letter or digit"}])
    try:
        _, args = runtime.registry.validate(definition.kind, definition.args)
    except UnknownJobKind as exc:
        raise invalid_fields([{"field": "kind", "message": str(exc)}]) from None
    except InvalidJobArguments as exc:
        raise invalid_fields([{"field": f"args.{item['field']}", "message": item["message"]}
                              for item in exc.details]) from None
    check_schedule(definition.cron, definition.timezone)
    created = await recurring_queries.put_definition(
        runtime.pool, recurring_id, kind=definition.kind, args=args, cron=definition.cron,
        timezone=definition.timezone, misfire_policy=definition.misfire_policy,
        misfire_grace_seconds=definition.misfire_grace_seconds,
        queue=None if definition.queue is None else definition.queue.value, enabled=definition.enabled,
    )
    return await get_recurring(runtime, recurring_id), created


async def delete_recurring(runtime: Runtime, recurring_id: str) -> None:
    """Remove a definition; it never fires again (jobs it already made stay). 404 when there is none."""
    if not await recurring_queries.delete_definition(runtime.pool, recurring_id):
        raise NotFound(recurring_id)
