"""Retention, for the maintenance worker: archive ended events, delete old job logs and finished jobs in batches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from shared.db.pool import Executor

# Deletes go in batches so a big backlog never holds long locks or one huge transaction.
DELETE_BATCH = 5000
# Told the running total after each batch (the job's progress).
OnBatch = Callable[[int], Awaitable[None]]



async def archive_ended_events(executor: Executor, older_than_days: int) -> list[asyncpg.Record]:
    return await executor.fetch(
        """UPDATE events SET archived_at = now(), updated_at = now()
            WHERE archived_at IS NULL
              AND coalesce(ends_at, starts_at) < now() - make_interval(days => $1)
        RETURNING id""",
        older_than_days,
    )


async def delete_old_logs(
    executor: Executor, older_than_days: int, batch: int = DELETE_BATCH, on_batch: OnBatch | None = None
) -> int:
    return await _delete_in_batches(
        executor,
        """DELETE FROM job_logs WHERE id IN (
               SELECT id FROM job_logs WHERE created_at < now() - make_interval(days => $1) LIMIT $2)""",
        older_than_days, batch, on_batch,
    )


async def delete_finished_jobs(
    executor: Executor, older_than_days: int, batch: int = DELETE_BATCH, on_batch: OnBatch | None = None
) -> int:
    """Succeeded, deleted, cancelled and skipped jobs, their history and logs with them (ON DELETE CASCADE);
    failed ones stay."""
    return await _delete_in_batches(
        executor,
        """DELETE FROM jobs WHERE id IN (
               SELECT id FROM jobs
                WHERE state IN ('succeeded', 'deleted', 'cancelled', 'skipped')
                  AND updated_at < now() - make_interval(days => $1)
                LIMIT $2
                  FOR UPDATE SKIP LOCKED)""",
        older_than_days, batch, on_batch,
    )


async def _delete_in_batches(
    executor: Executor, sql: str, days: int, batch: int, on_batch: OnBatch | None = None
) -> int:
    total = 0
    while True:
        status = await executor.execute(sql, days, batch)
        deleted = int(status.split()[-1])
        total += deleted
        if on_batch is not None:
            await on_batch(total)
        if deleted < batch:
            return total
