"""Operator actions on jobs: requeue, delete, cancel, enqueue now, one by id or many (by ids or a filter).

Shared by the api (its JSON routes and the dashboard's forms) and the operator's command line. Each action
changes Postgres first (guarded by the state machine), then publishes what became `enqueued`; a publish that
does not confirm is left to the outbox relay. An action on one job that cannot be done raises ActionRefused:
JobNotFound for an unknown id, StateConflict when the job's state does not allow it; the api answers them
with 404 and 409. The bulk actions count such jobs as skipped instead.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from shared import parking_lot
from shared.db import job_admin
from shared.jobs import CANCELLABLE, DELETABLE, REQUEUEABLE, JobState
from shared.runtime import Runtime

log = logging.getLogger(__name__)
PARKED_SWEEP_TIMEOUT_SECONDS = 10.0

BULK_CHUNK = 500
BULK_LIMIT = 10_000


@dataclass(frozen=True)
class BulkResult:
    changed: list[uuid.UUID]  # jobs the action moved
    skipped: int  # selected jobs whose state did not allow it (or that no longer exist)


class ActionRefused(Exception):
    """An action on one job that cannot be done; the message says why, for an operator to read."""


class JobNotFound(ActionRefused, LookupError):
    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(f"no job {job_id}")
        self.job_id = job_id


class StateConflict(ActionRefused, ValueError):
    def __init__(self, job_id: uuid.UUID, state: str, action: str, allowed: Sequence[str]) -> None:
        super().__init__(f"job {job_id} is {state}; {action} needs one of: {', '.join(allowed)}")
        self.job_id, self.state, self.action, self.allowed = job_id, state, action, tuple(allowed)


async def _conflict_or_missing(
    runtime: Runtime, job_id: uuid.UUID, action: str, allowed: Sequence[str]
) -> ActionRefused:
    state = await job_admin.job_state(runtime.pool, job_id)
    if state is None:
        return JobNotFound(job_id)
    return StateConflict(job_id, state, action, allowed)


async def requeue_job(runtime: Runtime, job_id: uuid.UUID, reason: str = "requeued by operator") -> asyncpg.Record:
    """Requeue one job with a fresh attempt budget and publish it; 404 unknown, 409 not requeueable."""
    row = await job_admin.requeue(runtime.pool, job_id, reason)
    if row is None:
        raise await _conflict_or_missing(runtime, job_id, "requeue", sorted(REQUEUEABLE))
    await forget_parked(runtime, [job_id])  # before publishing: a new copy of a quick failure must stay
    await runtime.client.publish([row])
    return row


async def delete_job(runtime: Runtime, job_id: uuid.UUID, reason: str = "deleted by operator") -> None:
    """Delete one job (it stays in the history as `deleted`); 404 unknown, 409 when it is processing."""
    if not await job_admin.delete(runtime.pool, [job_id], reason):
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
    if not await job_admin.cancel(runtime.pool, [job_id], cancelled_by, f"{reason} by {cancelled_by}"):
        raise await _conflict_or_missing(runtime, job_id, "cancel", sorted(CANCELLABLE))


async def enqueue_now(runtime: Runtime, job_id: uuid.UUID, reason: str = "enqueued now by operator") -> asyncpg.Record:
    """Run a `scheduled` job now instead of at its run_at; 404 unknown, 409 when not scheduled."""
    row = await job_admin.enqueue_scheduled_now(runtime.pool, job_id, reason)
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
        rows = await job_admin.requeue_jobs(runtime.pool, ids, reason)
        await forget_parked(runtime, [row["id"] for row in rows])  # before publishing, as in requeue_job
        await runtime.client.publish(list(rows))
        return rows

    return await _in_chunks(job_ids, requeue)


async def enqueue_now_jobs(
    runtime: Runtime, job_ids: Sequence[uuid.UUID], reason: str = "enqueued now by operator"
) -> BulkResult:
    """Run many scheduled jobs now; those no longer scheduled are counted as skipped."""
    async def enqueue(ids: list[uuid.UUID]) -> list[asyncpg.Record]:
        rows = await job_admin.enqueue_scheduled_now_many(runtime.pool, ids, reason)
        await runtime.client.publish(list(rows))
        return rows

    return await _in_chunks(job_ids, enqueue)


async def enqueue_now_matching(
    runtime: Runtime, job_filter: job_admin.JobFilter, limit: int = BULK_LIMIT,
    reason: str = "enqueued now by operator",
) -> BulkResult:
    """Run up to `limit` scheduled jobs matching the filter now."""
    return await enqueue_now_jobs(runtime, await job_admin.matching_ids(runtime.pool, job_filter, limit), reason)


async def delete_jobs(
    runtime: Runtime, job_ids: Sequence[uuid.UUID], reason: str = "deleted by operator"
) -> BulkResult:
    """Delete many jobs by id; those in a state that forbids it are counted as skipped."""
    result = await _in_chunks(job_ids, lambda ids: job_admin.delete(runtime.pool, ids, reason))
    await forget_parked(runtime, result.changed)
    return result


async def cancel_jobs(
    runtime: Runtime, job_ids: Sequence[uuid.UUID], cancelled_by: str, reason: str = "cancelled"
) -> BulkResult:
    """Cancel many jobs by id; those already final are counted as skipped."""
    return await _in_chunks(
        job_ids, lambda ids: job_admin.cancel(runtime.pool, ids, cancelled_by, f"{reason} by {cancelled_by}"))


async def requeue_matching(
    runtime: Runtime, job_filter: job_admin.JobFilter, limit: int = BULK_LIMIT, reason: str = "requeued by operator"
) -> BulkResult:
    """Requeue up to `limit` jobs matching the filter (the dashboard's "requeue all failed")."""
    return await requeue_jobs(runtime, await job_admin.matching_ids(runtime.pool, job_filter, limit), reason)


async def delete_matching(
    runtime: Runtime, job_filter: job_admin.JobFilter, limit: int = BULK_LIMIT, reason: str = "deleted by operator"
) -> BulkResult:
    """Delete up to `limit` jobs matching the filter (the dashboard's "delete all failed")."""
    return await delete_jobs(runtime, await job_admin.matching_ids(runtime.pool, job_filter, limit), reason)


async def cancel_matching(
    runtime: Runtime, job_filter: job_admin.JobFilter, cancelled_by: str, limit: int = BULK_LIMIT,
    reason: str = "cancelled",
) -> BulkResult:
    """Cancel up to `limit` jobs matching the filter (the dashboard's "cancel all enqueued")."""
    ids = await job_admin.matching_ids(runtime.pool, job_filter, limit)
    return await cancel_jobs(runtime, ids, cancelled_by, reason)
