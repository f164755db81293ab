"""Named queries on the job tables. Every state change goes through a guard built from shared.jobs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.jobs import DELETABLE, REQUEUEABLE, JobState, sources_of

Executor = asyncpg.Connection | asyncpg.Pool

# Statements that change many rows lock them in id order first, so two of them running at once
# (a worker's claims, a client's publish marks, an operator's bulk delete) cannot deadlock.
LOCK_IN_ORDER = "SELECT id FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"

# Operator requeue, of one job or many: back to `enqueued` with a fresh attempt budget.
REQUEUE = f"""UPDATE jobs SET state = 'enqueued', attempt = 0, state_reason = $2, worker = NULL,
                              published_at = NULL, run_at = least(run_at, now()), finished_at = NULL,
                              updated_at = now()
               WHERE id IN ({LOCK_IN_ORDER}) AND state = ANY($3::text[])
           RETURNING *"""
REQUEUEABLE_STATES = sorted(state.value for state in REQUEUEABLE)


def no_live_holder(threshold: str) -> str:
    """SQL: the job's worker has not heartbeaten within `threshold` (the placeholder of the seconds)."""
    return f"""NOT EXISTS (SELECT 1 FROM servers s
                             WHERE s.id = jobs.worker
                               AND s.last_heartbeat > now() - make_interval(secs => {threshold}))"""


CLAIMED_COLUMNS = "id, kind, args, queue, service, priority, attempt, max_attempts, run_at, parent_id"


@dataclass(frozen=True)
class NewJob:
    id: uuid.UUID
    kind: str
    args: dict[str, Any]
    queue: str
    service: str
    priority: int
    state: JobState
    max_attempts: int
    run_at: datetime
    idempotency_key: str | None = None
    recurring_id: str | None = None
    fire_time: datetime | None = None
    parent_id: uuid.UUID | None = None
    state_reason: str | None = None


async def insert_job(executor: Executor, job: NewJob) -> asyncpg.Record | None:
    """The inserted row, or None when the idempotency key or (recurring_id, fire_time) exists."""
    return await executor.fetchrow(
        """INSERT INTO jobs (id, kind, args, queue, service, priority, state, max_attempts, run_at,
                             idempotency_key, recurring_id, fire_time, parent_id, state_reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT DO NOTHING
           RETURNING *""",
        job.id, job.kind, job.args, job.queue, job.service, job.priority, job.state.value,
        job.max_attempts, job.run_at, job.idempotency_key, job.recurring_id, job.fire_time,
        job.parent_id, job.state_reason,
    )


async def find_by_idempotency_key(executor: Executor, key: str) -> asyncpg.Record | None:
    return await executor.fetchrow("SELECT * FROM jobs WHERE idempotency_key = $1", key)


async def get_job(executor: Executor, job_id: uuid.UUID) -> asyncpg.Record | None:
    return await executor.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)


async def job_history(executor: Executor, job_id: uuid.UUID) -> list[asyncpg.Record]:
    return await executor.fetch("SELECT * FROM job_states WHERE job_id = $1 ORDER BY id", job_id)


async def job_logs(executor: Executor, job_id: uuid.UUID, limit: int = 1000) -> list[asyncpg.Record]:
    return await executor.fetch(
        "SELECT * FROM job_logs WHERE job_id = $1 ORDER BY id LIMIT $2", job_id, limit
    )


async def mark_published(executor: Executor, job_ids: Sequence[uuid.UUID]) -> None:
    await executor.execute(
        f"UPDATE jobs SET published_at = now() WHERE id IN ({LOCK_IN_ORDER}) AND published_at IS NULL",
        list(job_ids),
    )


async def claim_many(
    executor: Executor, worker: str, deliveries: Sequence[tuple[uuid.UUID, bool]], *, dead_after_seconds: float
) -> dict[uuid.UUID, asyncpg.Record]:
    """Take jobs for `worker`, for many (job id, redelivered) deliveries in one statement; the rows taken, by id.

    None is taken that is finished, deleted, or alive in another worker. A job still `processing` is
    taken over when RabbitMQ redelivered its message (the previous holder's channel closed) or when its
    holder stopped heartbeating. A job delivered twice in one batch is claimed once; the caller gives
    it to one delivery only.
    """
    rows = await executor.fetch(
        f"""UPDATE jobs
               SET state = 'processing', attempt = attempt + 1, worker = $2,
                   started_at = now(), updated_at = now(), finished_at = NULL,
                   state_reason = CASE WHEN jobs.state = 'processing'
                                       THEN 'taken over from ' || coalesce(jobs.worker, 'unknown worker') END
              FROM (SELECT id, bool_or(redelivered) AS redelivered
                      FROM unnest($1::uuid[], $3::bool[]) AS d(id, redelivered) GROUP BY id) AS d
             WHERE jobs.id = d.id AND jobs.id IN ({LOCK_IN_ORDER})
               AND (jobs.state = ANY($4::text[])
                    OR (jobs.state = 'processing'
                        AND (d.redelivered OR {no_live_holder("$5")})))
         RETURNING {", ".join(f"jobs.{column}" for column in CLAIMED_COLUMNS.split(", "))}""",
        [job_id for job_id, _ in deliveries], worker, [redelivered for _, redelivered in deliveries],
        ["enqueued", "retrying"], dead_after_seconds,
    )
    return {row["id"]: row for row in rows}


async def job_state(executor: Executor, job_id: uuid.UUID) -> str | None:
    state: str | None = await executor.fetchval("SELECT state FROM jobs WHERE id = $1", job_id)
    return state


async def mark_succeeded_many(
    executor: Executor, worker: str, outcomes: Sequence[tuple[uuid.UUID, Any]]
) -> set[uuid.UUID]:
    """Record jobs as `succeeded` with their results, in one statement; the ids that were still this worker's."""
    rows = await executor.fetch(
        f"""UPDATE jobs SET state = 'succeeded', result = o.result::jsonb, finished_at = now(),
                           updated_at = now(), state_reason = NULL
             FROM unnest($1::uuid[], $2::text[]) AS o(id, result)
            WHERE jobs.id = o.id AND jobs.id IN ({LOCK_IN_ORDER}) AND jobs.state = 'processing' AND jobs.worker = $3
        RETURNING jobs.id""",
        [job_id for job_id, _ in outcomes],
        [None if result is None else json.dumps(result) for _, result in outcomes],
        worker,
    )
    return {row["id"] for row in rows}


async def mark_attempt_failed(
    executor: Executor, job_id: uuid.UUID, worker: str, *, state: JobState, reason: str,
    error: str, traceback: str | None, retry_in_seconds: float | None = None,
) -> bool:
    """Record a failed attempt as `retrying` (due back in `retry_in_seconds`) or `failed` (final)."""
    status = await executor.execute(
        """UPDATE jobs SET state = $3, state_reason = $4, last_error = $5, last_traceback = $6,
                           finished_at = CASE WHEN $3 = 'failed' THEN now() END, updated_at = now(),
                           retry_at = now() + make_interval(secs => $7)
            WHERE id = $1 AND state = 'processing' AND worker = $2""",
        job_id, worker, state.value, reason, error, traceback, retry_in_seconds,
    )
    return bool(status == "UPDATE 1")


async def overdue_retries(
    connection: asyncpg.Connection, overdue_seconds: float, limit: int
) -> list[asyncpg.Record]:
    """`retrying` jobs whose delayed message should have come back long ago, locked for the caller."""
    return await connection.fetch(
        f"""SELECT {CLAIMED_COLUMNS} FROM jobs
             WHERE state = 'retrying' AND retry_at < now() - make_interval(secs => $1)
             ORDER BY retry_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED""",
        overdue_seconds, limit,
    )


async def postpone_retries(connection: asyncpg.Connection, job_ids: Sequence[uuid.UUID], seconds: float) -> None:
    """Give republished retries time to reach a worker before they count as overdue again."""
    await connection.execute(
        "UPDATE jobs SET retry_at = now() + make_interval(secs => $2) WHERE id = ANY($1::uuid[])",
        list(job_ids), seconds,
    )


async def release(executor: Executor, job_ids: Sequence[uuid.UUID], worker: str, reason: str) -> None:
    """Give jobs back to the queue without counting the interrupted attempt (graceful shutdown)."""
    await executor.execute(
        f"""UPDATE jobs SET state = 'enqueued', attempt = greatest(attempt - 1, 0), state_reason = $3,
                           worker = NULL, updated_at = now()
            WHERE id IN ({LOCK_IN_ORDER}) AND state = 'processing' AND worker = $2""",
        list(job_ids), worker, reason,
    )


async def requeue(executor: Executor, job_id: uuid.UUID, reason: str) -> asyncpg.Record | None:
    """Operator requeue (see REQUEUE); None if not requeueable."""
    return await executor.fetchrow(REQUEUE, [job_id], reason, REQUEUEABLE_STATES)


async def delete(executor: Executor, job_ids: Sequence[uuid.UUID], reason: str) -> list[asyncpg.Record]:
    return await executor.fetch(
        f"""UPDATE jobs SET state = 'deleted', state_reason = $2, finished_at = now(), updated_at = now()
            WHERE id IN ({LOCK_IN_ORDER}) AND state = ANY($3::text[])
        RETURNING id""",
        list(job_ids), reason, sorted(state.value for state in DELETABLE),
    )


async def promote_due(connection: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Move due scheduled jobs to `enqueued`; concurrent schedulers skip each other's rows."""
    return await connection.fetch(
        f"""UPDATE jobs SET state = 'enqueued', state_reason = 'due', updated_at = now()
             WHERE id IN (SELECT id FROM jobs
                           WHERE state = 'scheduled' AND run_at <= now()
                           ORDER BY run_at
                           LIMIT $1
                           FOR UPDATE SKIP LOCKED)
               AND state = ANY($2::text[])
         RETURNING {CLAIMED_COLUMNS}""",
        limit, sources_of(JobState.ENQUEUED),
    )


async def next_due_time(executor: Executor) -> datetime | None:
    value: datetime | None = await executor.fetchval(
        "SELECT min(run_at) FROM jobs WHERE state = 'scheduled'"
    )
    return value


async def unpublished(connection: asyncpg.Connection, grace_seconds: float, limit: int) -> list[asyncpg.Record]:
    """Committed jobs whose publish never confirmed, locked so replicas of the relay split them."""
    return await connection.fetch(
        f"""SELECT {CLAIMED_COLUMNS} FROM jobs
             WHERE state = 'enqueued' AND published_at IS NULL
               AND updated_at < now() - make_interval(secs => $1)
             ORDER BY updated_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED""",
        grace_seconds, limit,
    )


async def insert_logs(executor: Executor, rows: Sequence[tuple[uuid.UUID, str, str, datetime]]) -> None:
    # Skip lines of jobs deleted meanwhile rather than failing the whole batch on the foreign key.
    await executor.execute(
        """INSERT INTO job_logs (job_id, level, message, created_at)
           SELECT l.job_id, l.level, l.message, l.created_at
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
                  AS l(job_id, level, message, created_at)
            WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.id = l.job_id)""",
        [row[0] for row in rows], [row[1] for row in rows], [row[2] for row in rows],
        [row[3] for row in rows],
    )
