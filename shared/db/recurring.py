"""Named queries on recurring_jobs: the definitions the scheduler fires and what it fired last."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared.db.jobs import Executor

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
