"""Named queries on recurring_jobs: the definitions the scheduler fires and what it fired last."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared.db.pool import Executor

DEFINITION_COLUMNS = (
    "id, kind, args, cron, timezone, misfire_policy, misfire_grace_seconds, enabled, last_fire_time, last_job_id, "
    "queue"
)


async def list_definitions(executor: Executor) -> list[asyncpg.Record]:
    return await executor.fetch(f"SELECT {DEFINITION_COLUMNS} FROM recurring_jobs ORDER BY id")


async def record_fire(executor: Executor, recurring_id: str, fire_time: datetime, job_id: uuid.UUID) -> None:
    """Remember the occurrence; replicas firing out of order never move last_fire_time backwards."""
    await executor.execute(
        """UPDATE recurring_jobs
              SET last_job_id = CASE WHEN last_fire_time IS NULL OR last_fire_time <= $2
                                     THEN $3 ELSE last_job_id END,
                  last_fire_time = greatest(last_fire_time, $2)
            WHERE id = $1""",
        recurring_id, fire_time, job_id,
    )


# What operators see and change (the api's /api/recurring and the dashboard's Recurring page): each definition
# with its latest job, and edits whose NOTIFY the schedulers pick up.

OVERVIEW_SQL = """
    SELECT r.id, r.kind, r.args, r.cron, r.timezone, r.misfire_policy, r.enabled, r.last_fire_time, r.queue,
           coalesce(latest.id, r.last_job_id) AS last_job_id, latest.state AS last_job_state,
           latest.created_at AS last_run_at
      FROM recurring_jobs r
      LEFT JOIN LATERAL (SELECT id, state, created_at FROM jobs
                          WHERE jobs.recurring_id = r.id
                          ORDER BY created_at DESC LIMIT 1) AS latest ON TRUE"""


async def list_overview(executor: Executor) -> list[asyncpg.Record]:
    """Every definition by id, with the latest job it made (OVERVIEW_SQL's columns)."""
    return await executor.fetch(OVERVIEW_SQL + " ORDER BY r.id")


async def get_overview(executor: Executor, recurring_id: str) -> asyncpg.Record | None:
    return await executor.fetchrow(OVERVIEW_SQL + " WHERE r.id = $1", recurring_id)


async def get_job_template(executor: Executor, recurring_id: str) -> asyncpg.Record | None:
    """kind, args and queue: what one run of the definition enqueues."""
    return await executor.fetchrow("SELECT kind, args, queue FROM recurring_jobs WHERE id = $1", recurring_id)


async def get_schedule(executor: Executor, recurring_id: str) -> asyncpg.Record | None:
    """cron and timezone of the definition."""
    return await executor.fetchrow("SELECT cron, timezone FROM recurring_jobs WHERE id = $1", recurring_id)


async def update_schedule(
    executor: Executor, recurring_id: str, cron: str | None, timezone: str | None, enabled: bool | None
) -> None:
    """Change cron, time zone and/or enabled; None keeps the current value."""
    await executor.execute(
        """UPDATE recurring_jobs SET cron = coalesce($2, cron), timezone = coalesce($3, timezone),
                                     enabled = coalesce($4, enabled), updated_at = now()
            WHERE id = $1""",
        recurring_id, cron, timezone, enabled,
    )


async def put_definition(
    executor: Executor, recurring_id: str, *, kind: str, args: object, cron: str, timezone: str,
    misfire_policy: str, misfire_grace_seconds: int, queue: str | None, enabled: bool,
) -> bool:
    """Create or replace a whole definition (True: created); replacing keeps its last fire time."""
    created: bool = await executor.fetchval(
        """INSERT INTO recurring_jobs AS r (id, kind, args, cron, timezone, misfire_policy, misfire_grace_seconds,
                                            queue, enabled)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (id) DO UPDATE
              SET kind = excluded.kind, args = excluded.args, cron = excluded.cron, timezone = excluded.timezone,
                  misfire_policy = excluded.misfire_policy, misfire_grace_seconds = excluded.misfire_grace_seconds,
                  queue = excluded.queue, enabled = excluded.enabled, updated_at = now()
        RETURNING (xmax = 0)""",
        recurring_id, kind, args, cron, timezone, misfire_policy, misfire_grace_seconds, queue, enabled,
    )
    return created


async def delete_definition(executor: Executor, recurring_id: str) -> bool:
    """Remove a definition (jobs it already made stay); False when there was none."""
    return await executor.execute("DELETE FROM recurring_jobs WHERE id = $1", recurring_id) == "DELETE 1"
