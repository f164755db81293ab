"""Operator actions on jobs and recurring jobs, shared by the JSON API and the dashboard's forms.

Each action changes Postgres first (guarded by the state machine), then publishes what became
`enqueued`; a publish that does not confirm is left to the outbox relay. Failures are ApiErrors
(404 unknown, 409 wrong state, 422 bad value naming the field) that both callers can show as they are.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from services.api.errors import ApiError, invalid_fields
from services.api.schemas import RECURRING_ID_PATTERN, RecurringOut, RecurringPut
from shared import parking_lot
from shared.client import EnqueuedJob
from shared.cron import InvalidSchedule, Schedule, parse_cron
from shared.db import job_search
from shared.db import jobs as job_queries
from shared.jobs import CANCELLABLE, DELETABLE, REQUEUEABLE, JobState
from shared.registry import InvalidJobArguments, UnknownJobKind
from shared.runtime import Runtime

log = logging.getLogger(__name__)
PARKED_SWEEP_TIMEOUT_SECONDS = 10.0

BULK_CHUNK = 500
BULK_LIMIT = 10_000


@dataclass(frozen=True)
class BulkResult:
    changed: list[uuid.UUID]  # jobs the action moved
    skipped: int  # selected jobs whose state did not allow it (or that no longer exist)


class NotFound(ApiError):
    def __init__(self, what: str, field: str) -> None:
        super().__init__(404, "not_found", f"no {what}", [{"field": field, "message": "not found"}])


class StateConflict(ApiError):
    def __init__(self, job_id: uuid.UUID, state: str, action: str, allowed: Sequence[str]) -> None:
        message = f"job {job_id} is {state}; {action} needs one of: {', '.join(allowed)}"
        super().__init__(409, "invalid_state", message, [{"field": "state", "message": message}])


async def _conflict_or_missing(runtime: Runtime, job_id: uuid.UUID, action: str, allowed: Sequence[str]) -> ApiError:
    state = await job_queries.job_state(runtime.pool, job_id)
    if state is None:
        return NotFound(f"job {job_id}", "job_id")
    return StateConflict(job_id, state, action, allowed)


async def requeue_job(runtime: Runtime, job_id: uuid.UUID, reason: str = "requeued by operator") -> asyncpg.Record:
    """Requeue one job with a fresh attempt budget and publish it; 404 unknown, 409 not requeueable."""
    row = await job_queries.requeue(runtime.pool, job_id, reason)
    if row is None:
        raise await _conflict_or_missing(runtime, job_id, "requeue", sorted(REQUEUEABLE))
    await forget_parked(runtime, [job_id])  # before publishing: a new copy of a quick failure must stay
    await runtime.client.publish([row])
    return row


async def delete_job(runtime: Runtime, job_id: uuid.UUID, reason: str = "deleted by operator") -> None:
    """Delete one job (it stays in the history as `deleted`); 404 unknown, 409 when it is processing."""
    if not await job_queries.delete(runtime.pool, [job_id], reason):
        raise await _conflict_or_missing(runtime, job_id, "delete", sorted(DELETABLE))
    await forget_parked(runtime, [job_id])


async def forget_parked(runtime: Runtime, job_ids: Sequence[uuid.UUID]) -> None:
    """Remove the parking-lot copies of jobs an operator requeued or deleted: they no longer say anything
    true. Best effort after the commit: with RabbitMQ away the copies stay until the api's sweeper (deleted
    or succeeded jobs) or a purge removes them."""
    if not job_ids:
        return
    try:
        # Bounded: a reconnecting broker must not hold the operator's requeue (the copies can wait).
        async with asyncio.timeout(PARKED_SWEEP_TIMEOUT_SECONDS):
            await parking_lot.forget_jobs(runtime.broker, job_ids, quorum=runtime.settings.queue_type == "quorum")
    except Exception:  # the change itself is committed; a stale copy is not worth failing it
        log.warning("could not remove parked copies", extra={"jobs": len(job_ids)}, exc_info=True)


async def cancel_job(runtime: Runtime, job_id: uuid.UUID, cancelled_by: str, reason: str = "cancelled") -> None:
    """Cancel one job (a running one stops at its worker's next lease renewal); 404 unknown, 409 when final."""
    if not await job_queries.cancel(runtime.pool, [job_id], cancelled_by, f"{reason} by {cancelled_by}"):
        raise await _conflict_or_missing(runtime, job_id, "cancel", sorted(CANCELLABLE))


async def enqueue_now(runtime: Runtime, job_id: uuid.UUID, reason: str = "enqueued now by operator") -> asyncpg.Record:
    """Run a `scheduled` job now instead of at its run_at; 404 unknown, 409 when not scheduled."""
    row = await job_search.enqueue_scheduled_now(runtime.pool, job_id, reason)
    if row is None:
        raise await _conflict_or_missing(runtime, job_id, "enqueue now", [JobState.SCHEDULED.value])
    await runtime.client.publish([row])
    return row


async def _in_chunks(
    job_ids: Sequence[uuid.UUID], change: Callable[[list[uuid.UUID]], Awaitable[Sequence[asyncpg.Record]]]
) -> BulkResult:
    """`change` applied to the distinct ids, BULK_CHUNK at a time; the ids it returned no row for are skipped."""
    changed: list[uuid.UUID] = []
    ids = list(dict.fromkeys(job_ids))
    for start in range(0, len(ids), BULK_CHUNK):
        rows = await change(ids[start:start + BULK_CHUNK])
        changed.extend(row["id"] for row in rows)
    return BulkResult(changed, len(ids) - len(changed))


async def requeue_jobs(
    runtime: Runtime, job_ids: Sequence[uuid.UUID], reason: str = "requeued by operator"
) -> BulkResult:
    """Requeue many jobs by id; those in a state that forbids it are counted as skipped."""
    async def requeue(ids: list[uuid.UUID]) -> list[asyncpg.Record]:
        rows = await job_search.requeue_jobs(runtime.pool, ids, reason)
        await forget_parked(runtime, [row["id"] for row in rows])  # before publishing, as in requeue_job
        await runtime.client.publish(list(rows))
        return rows

    return await _in_chunks(job_ids, requeue)


async def enqueue_now_jobs(
    runtime: Runtime, job_ids: Sequence[uuid.UUID], reason: str = "enqueued now by operator"
) -> BulkResult:
    """Run many scheduled jobs now; those no longer scheduled are counted as skipped."""
    async def enqueue(ids: list[uuid.UUID]) -> list[asyncpg.Record]:
        rows = await job_search.enqueue_scheduled_now_many(runtime.pool, ids, reason)
        await runtime.client.publish(list(rows))
        return rows

    return await _in_chunks(job_ids, enqueue)


async def enqueue_now_matching(
    runtime: Runtime, job_filter: job_search.JobFilter, limit: int = BULK_LIMIT,
    reason: str = "enqueued now by operator",
) -> BulkResult:
    """Run up to `limit` scheduled jobs matching the filter now."""
    return await enqueue_now_jobs(runtime, await job_search.matching_ids(runtime.pool, job_filter, limit), reason)


async def delete_jobs(
    runtime: Runtime, job_ids: Sequence[uuid.UUID], reason: str = "deleted by operator"
) -> BulkResult:
    """Delete many jobs by id; those in a state that forbids it are counted as skipped."""
    result = await _in_chunks(job_ids, lambda ids: job_queries.delete(runtime.pool, ids, reason))
    await forget_parked(runtime, result.changed)
    return result


async def cancel_jobs(
    runtime: Runtime, job_ids: Sequence[uuid.UUID], cancelled_by: str, reason: str = "cancelled"
) -> BulkResult:
    """Cancel many jobs by id; those already final are counted as skipped."""
    return await _in_chunks(
        job_ids, lambda ids: job_queries.cancel(runtime.pool, ids, cancelled_by, f"{reason} by {cancelled_by}"))


async def requeue_matching(
    runtime: Runtime, job_filter: job_search.JobFilter, limit: int = BULK_LIMIT, reason: str = "requeued by operator"
) -> BulkResult:
    """Requeue up to `limit` jobs matching the filter (the dashboard's "requeue all failed")."""
    return await requeue_jobs(runtime, await job_search.matching_ids(runtime.pool, job_filter, limit), reason)


async def delete_matching(
    runtime: Runtime, job_filter: job_search.JobFilter, limit: int = BULK_LIMIT, reason: str = "deleted by operator"
) -> BulkResult:
    """Delete up to `limit` jobs matching the filter (the dashboard's "delete all failed")."""
    return await delete_jobs(runtime, await job_search.matching_ids(runtime.pool, job_filter, limit), reason)


async def cancel_matching(
    runtime: Runtime, job_filter: job_search.JobFilter, cancelled_by: str, limit: int = BULK_LIMIT,
    reason: str = "cancelled",
) -> BulkResult:
    """Cancel up to `limit` jobs matching the filter (the dashboard's "cancel all enqueued")."""
    ids = await job_search.matching_ids(runtime.pool, job_filter, limit)
    return await cancel_jobs(runtime, ids, cancelled_by, reason)


# Recurring jobs


RECURRING_SQL = """
    SELECT r.id, r.kind, r.args, r.cron, r.timezone, r.misfire_policy, r.enabled, r.last_fire_time, r.queue,
           coalesce(latest.id, r.last_job_id) AS last_job_id, latest.state AS last_job_state,
           latest.created_at AS last_run_at
      FROM recurring_jobs r
      LEFT JOIN LATERAL (SELECT id, state, created_at FROM jobs
                          WHERE jobs.recurring_id = r.id
                          ORDER BY created_at DESC LIMIT 1) AS latest ON TRUE"""


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
    return [_view(row, now) for row in await runtime.pool.fetch(RECURRING_SQL + " ORDER BY r.id")]


async def get_recurring(runtime: Runtime, recurring_id: str) -> RecurringOut:
    """One recurring job; 404 when there is none with this id."""
    row = await runtime.pool.fetchrow(RECURRING_SQL + " WHERE r.id = $1", recurring_id)
    if row is None:
        raise NotFound(f"recurring job {recurring_id!r}", "recurring_id")
    return _view(row, datetime.now(UTC))


async def trigger_recurring(runtime: Runtime, recurring_id: str) -> EnqueuedJob:
    """Enqueue one run now, outside the schedule (fire_time NULL, so it never collides with an occurrence)."""
    row = await runtime.pool.fetchrow("SELECT kind, args, queue FROM recurring_jobs WHERE id = $1", recurring_id)
    if row is None:
        raise NotFound(f"recurring job {recurring_id!r}", "recurring_id")
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
    current = await runtime.pool.fetchrow("SELECT cron, timezone FROM recurring_jobs WHERE id = $1", recurring_id)
    if current is None:
        raise NotFound(f"recurring job {recurring_id!r}", "recurring_id")
    if cron is not None or timezone is not None:
        check_schedule(cron if cron is not None else current["cron"],
                       timezone if timezone is not None else current["timezone"],
                       field="cron" if cron is not None else "timezone")
    await runtime.pool.execute(
        """UPDATE recurring_jobs SET cron = coalesce($2, cron), timezone = coalesce($3, timezone),
                                     enabled = coalesce($4, enabled), updated_at = now()
            WHERE id = $1""",
        recurring_id, cron, timezone, enabled,
    )
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
    created: bool = await runtime.pool.fetchval(
        """INSERT INTO recurring_jobs AS r (id, kind, args, cron, timezone, misfire_policy, misfire_grace_seconds,
                                            queue, enabled)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (id) DO UPDATE
              SET kind = excluded.kind, args = excluded.args, cron = excluded.cron, timezone = excluded.timezone,
                  misfire_policy = excluded.misfire_policy, misfire_grace_seconds = excluded.misfire_grace_seconds,
                  queue = excluded.queue, enabled = excluded.enabled, updated_at = now()
        RETURNING (xmax = 0)""",
        recurring_id, definition.kind, args, definition.cron, definition.timezone, definition.misfire_policy,
        definition.misfire_grace_seconds, None if definition.queue is None else definition.queue.value,
        definition.enabled,
    )
    return await get_recurring(runtime, recurring_id), created


async def delete_recurring(runtime: Runtime, recurring_id: str) -> None:
    """Remove a definition; it never fires again (jobs it already made stay). 404 when there is none."""
    if await runtime.pool.execute("DELETE FROM recurring_jobs WHERE id = $1", recurring_id) != "DELETE 1":
        raise NotFound(f"recurring job {recurring_id!r}", "recurring_id")
