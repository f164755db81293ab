"""Named queries on servers: heartbeats of running processes, so the dashboard and the reaper know who is alive,
and the reaper's delete of the dead."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.db.pool import Executor


async def beat(
    executor: Executor, server_id: str, *, service: str, host: str, pid: int, queues: Sequence[str],
    concurrency: int,
) -> None:
    await executor.execute(
        """INSERT INTO servers (id, service, host, pid, queues, concurrency)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (id) DO UPDATE SET last_heartbeat = now()""",
        server_id, service, host, pid, list(queues), concurrency,
    )


async def remove(executor: Executor, server_id: str) -> None:
    await executor.execute("DELETE FROM servers WHERE id = $1", server_id)


async def list_servers(executor: Executor, dead_after_seconds: float) -> list[asyncpg.Record]:
    return await executor.fetch(
        """SELECT *, last_heartbeat < now() - make_interval(secs => $1) AS dead
             FROM servers ORDER BY service, started_at""",
        dead_after_seconds,
    )


async def delete_dead_servers(executor: Executor, dead_after_seconds: float) -> list[str]:
    rows = await executor.fetch(
        "DELETE FROM servers WHERE last_heartbeat < now() - make_interval(secs => $1) RETURNING id",
        dead_after_seconds,
    )
    return [row["id"] for row in rows]
