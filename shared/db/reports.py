"""Named queries of the daily report: the day's figures, read in [start, end), and the stored report."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import asyncpg

from shared.db.pool import Executor


async def count_events_created(executor: Executor, start: datetime, end: datetime) -> int:
    count: int = await executor.fetchval(
        "SELECT count(*) FROM events WHERE created_at >= $1 AND created_at < $2", start, end
    )
    return count


async def count_participants_registered(executor: Executor, start: datetime, end: datetime) -> int:
    count: int = await executor.fetchval(
        "SELECT count(*) FROM participants WHERE created_at >= $1 AND created_at < $2", start, end
    )
    return count


async def count_emails(executor: Executor, start: datetime, end: datetime) -> dict[str, int]:
    """Sent and failed in the window. A row is never touched after it reaches `sent`, and `failed` is its
    last update, so updated_at dates both (and has an index)."""
    row = await executor.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
                  count(*) FILTER (WHERE status = 'failed') AS failed
             FROM emails
            WHERE updated_at >= $1 AND updated_at < $2""",
        start, end,
    )
    assert row is not None
    return {"sent": row["sent"], "failed": row["failed"]}


async def jobs_finished_by_kind(executor: Executor, start: datetime, end: datetime) -> list[asyncpg.Record]:
    """Per kind, the jobs that reached `succeeded` / `failed` in the window (each job once per outcome)."""
    return await executor.fetch(
        """SELECT j.kind,
                  count(DISTINCT s.job_id) FILTER (WHERE s.state = 'succeeded') AS succeeded,
                  count(DISTINCT s.job_id) FILTER (WHERE s.state = 'failed') AS failed
             FROM job_states s JOIN jobs j ON j.id = s.job_id
            WHERE s.created_at >= $1 AND s.created_at < $2 AND s.state IN ('succeeded', 'failed')
            GROUP BY j.kind
            ORDER BY j.kind""",
        start, end,
    )


async def lateness_by_kind(executor: Executor, start: datetime, end: datetime) -> list[asyncpg.Record]:
    """Per kind, how late jobs first started: first `processing` history row minus run_at (never below
    zero), for jobs whose first start fell in [start, end). The one lateness of the system: the daily
    report and the dashboard both read it."""
    return await executor.fetch(
        """WITH first_start AS (
               SELECT s.job_id, min(s.created_at) AS started
                 FROM job_states s
                WHERE s.state = 'processing' AND s.created_at < $2
                  AND s.job_id IN (SELECT job_id FROM job_states
                                    WHERE state = 'processing' AND created_at >= $1 AND created_at < $2)
                GROUP BY s.job_id
               HAVING min(s.created_at) >= $1)
           SELECT j.kind, count(*) AS count,
                  percentile_cont(0.5) WITHIN GROUP (
                      ORDER BY greatest(extract(epoch FROM f.started - j.run_at), 0)) AS p50_seconds,
                  percentile_cont(0.99) WITHIN GROUP (
                      ORDER BY greatest(extract(epoch FROM f.started - j.run_at), 0)) AS p99_seconds
             FROM first_start f JOIN jobs j ON j.id = f.job_id
            GROUP BY j.kind
            ORDER BY j.kind""",
        start, end,
    )


async def job_fire_time(executor: Executor, job_id: uuid.UUID) -> datetime | None:
    """When the job was meant to run: its recurring fire time, else its run_at."""
    value: datetime | None = await executor.fetchval(
        "SELECT coalesce(fire_time, run_at) FROM jobs WHERE id = $1", job_id
    )
    return value


async def store_report(executor: Executor, day: date, content: dict[str, Any], job_id: uuid.UUID) -> None:
    await executor.execute(
        """INSERT INTO reports (day, content, job_id) VALUES ($1, $2, $3)
           ON CONFLICT (day) DO UPDATE SET content = EXCLUDED.content, job_id = EXCLUDED.job_id, updated_at = now()""",
        day, content, job_id,
    )
