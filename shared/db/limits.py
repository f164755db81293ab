"""Claims under per-kind limits (shared/limits.py): one transaction per claim, serialised per kind."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.db import jobs as job_queries
from shared.db.pool import Executor, acquire
from shared.limits import LIMIT_RECHECK_SECONDS, KindLimits

# pg_advisory_xact_lock(class, key): the class keeps these locks apart from any other advisory lock.
LIMIT_LOCK_CLASS = 0x6C696D  # "lim"
# A reserved start this close is taken at once rather than bounced through the scheduler.
SLOT_TOLERANCE_SECONDS = 0.002


@dataclass(frozen=True)
class HeldBack:
    """The job went back to `scheduled` until `until`: its kind's `limit` is used up."""

    limit: str
    until: datetime


async def claim_limited(
    pool: asyncpg.Pool, worker: str, job_id: uuid.UUID, attempt: int, kind: str, limits: KindLimits,
    *, lease_seconds: float,
) -> asyncpg.Record | HeldBack | None:
    """Claim like `claim_many` when the kind's limits allow, else hold the job back; None: not claimable."""
    async with acquire(pool) as connection, connection.transaction():
        # Counting the running jobs and claiming must be one step per kind, or two workers both see room.
        await connection.execute("SELECT pg_advisory_xact_lock($1::int, hashtext($2))", LIMIT_LOCK_CLASS, kind)
        job = await connection.fetchrow(
            """SELECT limit_slot_at <= clock_timestamp() AS slot_due,
                      (state = 'enqueued' OR (state = 'retrying' AND attempt = $2
                                              AND coalesce(retry_at, '-infinity') <= clock_timestamp()))
                          AS waitable
                 FROM jobs WHERE id = $1 FOR UPDATE""",
            job_id, attempt,
        )
        if job is None:
            return None
        # A takeover of an expired lease is not held back (its attempt already counted); it still needs room.
        if limits.concurrency is not None:
            running = await connection.fetchval(
                """SELECT count(*) FROM jobs WHERE kind = $1 AND state = 'processing' AND id <> $2
                                             AND lease_expires_at > clock_timestamp()""",
                kind, job_id,
            )
            if running >= limits.concurrency:
                if not job["waitable"]:
                    return None
                return await _hold_back(connection, job_id, "concurrency", None, LIMIT_RECHECK_SECONDS,
                                        f"{running} of {limits.concurrency} running")
        interval = limits.interval
        if interval is not None and job["waitable"] and not job["slot_due"]:
            slot: datetime = await connection.fetchval(
                """INSERT INTO rate_limit_slots AS s (key, next_at)
                   VALUES ($1, clock_timestamp() + make_interval(secs => $2))
                   ON CONFLICT (key) DO UPDATE
                      SET next_at = greatest(s.next_at, clock_timestamp()) + make_interval(secs => $2)
                   RETURNING next_at - make_interval(secs => $2)""",
                limits.group or kind, interval,
            )
            wait = await connection.fetchval("SELECT extract(epoch FROM $1::timestamptz - clock_timestamp())", slot)
            if wait > SLOT_TOLERANCE_SECONDS:
                return await _hold_back(connection, job_id, "rate", slot, None,
                                        f"{limits.rate:g} per {limits.per_seconds:g}s")
        claimed = await job_queries.claim_many(connection, worker, [(job_id, attempt)], lease_seconds=lease_seconds)
        return claimed.get(job_id)


async def _hold_back(
    connection: asyncpg.Connection, job_id: uuid.UUID, limit: str, slot: datetime | None,
    recheck_seconds: float | None, detail: str,
) -> HeldBack:
    """Back to `scheduled` (no attempt counted) until its slot, or for a recheck; the scheduler is told."""
    until: datetime = await connection.fetchval(
        """UPDATE jobs SET state = 'scheduled', limit_wait = $2, limit_slot_at = $3,
                          run_at = coalesce($3, clock_timestamp() + make_interval(secs => $4)),
                          state_reason = $5, published_at = NULL, updated_at = now()
            WHERE id = $1
        RETURNING run_at""",
        job_id, limit, slot, recheck_seconds, f"waiting for limit ({limit}: {detail})",
    )
    await connection.execute("SELECT pg_notify('jobs_scheduled', $1::text)", until.isoformat())
    return HeldBack(limit, until)


async def wake_waiters(executor: Executor, kind: str, count: int) -> int:
    """A run of `kind` ended: the next `count` jobs waiting for its concurrency limit are due now."""
    rows = await executor.fetch(
        """UPDATE jobs SET run_at = clock_timestamp(), updated_at = now()
            WHERE id IN (SELECT id FROM jobs
                          WHERE state = 'scheduled' AND kind = $1 AND limit_wait = 'concurrency'
                          ORDER BY run_at LIMIT $2
                          FOR UPDATE SKIP LOCKED)
        RETURNING run_at""",
        kind, count,
    )
    if rows:
        await executor.execute("SELECT pg_notify('jobs_scheduled', $1::text)", rows[0]["run_at"].isoformat())
    return len(rows)
