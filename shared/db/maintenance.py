"""Named queries of the maintenance worker: archiving, retention, and reaping dead servers' jobs."""

from __future__ import annotations

import asyncpg

from shared.db.jobs import CLAIMED_COLUMNS, Executor, no_live_holder

# Deletes go in batches so a big backlog never holds long locks or one huge transaction.
DELETE_BATCH = 5000

# A server is alive while its heartbeat is fresh; `$1` is the dead-after threshold in seconds.
_NO_LIVE_HOLDER = no_live_holder("$1")


async def archive_ended_events(executor: Executor, older_than_days: int) -> list[asyncpg.Record]:
    return await executor.fetch(
        """UPDATE events SET archived_at = now(), updated_at = now()
            WHERE archived_at IS NULL
              AND coalesce(ends_at, starts_at) < now() - make_interval(days => $1)
        RETURNING id""",
        older_than_days,
    )


async def delete_old_logs(executor: Executor, older_than_days: int, batch: int = DELETE_BATCH) -> int:
    return await _delete_in_batches(
        executor,
        """DELETE FROM job_logs WHERE id IN (
               SELECT id FROM job_logs WHERE created_at < now() - make_interval(days => $1) LIMIT $2)""",
        older_than_days, batch,
    )


async def delete_finished_jobs(executor: Executor, older_than_days: int, batch: int = DELETE_BATCH) -> int:
    """Succeeded and deleted jobs, their history and logs with them (ON DELETE CASCADE); failed ones stay."""
    return await _delete_in_batches(
        executor,
        """DELETE FROM jobs WHERE id IN (
               SELECT id FROM jobs
                WHERE state IN ('succeeded', 'deleted')
                  AND updated_at < now() - make_interval(days => $1)
                LIMIT $2
                  FOR UPDATE SKIP LOCKED)""",
        older_than_days, batch,
    )


async def _delete_in_batches(executor: Executor, sql: str, days: int, batch: int) -> int:
    total = 0
    while True:
        status = await executor.execute(sql, days, batch)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < batch:
            return total


async def requeue_orphaned_jobs(connection: asyncpg.Connection, dead_after_seconds: float) -> list[asyncpg.Record]:
    """Jobs `processing` on a server that stopped heartbeating, back to `enqueued` with a reason.

    The interrupted attempt still counts, so a job that kills its worker every time runs out of attempts.
    """
    return await connection.fetch(
        f"""UPDATE jobs
               SET state = 'enqueued', worker = NULL, published_at = NULL, updated_at = now(),
                   state_reason = 'requeued: server ' || coalesce(worker, 'unknown') || ' stopped heartbeating'
             WHERE state = 'processing' AND attempt < max_attempts AND {_NO_LIVE_HOLDER}
         RETURNING {CLAIMED_COLUMNS}""",
        dead_after_seconds,
    )


async def fail_orphaned_jobs(connection: asyncpg.Connection, dead_after_seconds: float) -> list[asyncpg.Record]:
    """Orphaned jobs whose interrupted attempt was their last: `failed`, like any exhausted job."""
    return await connection.fetch(
        f"""UPDATE jobs
               SET state = 'failed', finished_at = now(), updated_at = now(),
                   state_reason = 'attempts exhausted: server ' || coalesce(worker, 'unknown')
                                  || ' stopped heartbeating during the last attempt',
                   last_error = 'server ' || coalesce(worker, 'unknown') || ' stopped heartbeating'
             WHERE state = 'processing' AND attempt >= max_attempts AND {_NO_LIVE_HOLDER}
         RETURNING {CLAIMED_COLUMNS}""",
        dead_after_seconds,
    )


async def delete_dead_servers(connection: asyncpg.Connection, dead_after_seconds: float) -> list[str]:
    rows = await connection.fetch(
        "DELETE FROM servers WHERE last_heartbeat < now() - make_interval(secs => $1) RETURNING id",
        dead_after_seconds,
    )
    return [row["id"] for row in rows]
