"""Delayed jobs wait in Postgres until due; the scheduler promotes them, never early."""

from __future__ import annotations

import asyncio
import statistics

from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.scheduler import StartScheduler, start_scheduler_fixture  # noqa: F401  (fixture)
from tests.support.waiting import eventually

JOBS = 500


async def test_five_hundred_delayed_jobs_never_start_early(
    runtime: Runtime, start_worker: StartWorker, start_scheduler: StartScheduler
) -> None:
    await start_worker(concurrency=20)
    await start_scheduler()
    # Due 2 to 10 seconds from now, spread evenly.
    jobs = await asyncio.gather(*(
        runtime.client.enqueue("test.noop", {"n": n}, delay=2 + 8 * n / (JOBS - 1)) for n in range(JOBS)
    ))
    ids = [job.id for job in jobs if job is not None]
    assert len(ids) == JOBS
    assert {job.state.value for job in jobs if job is not None} == {"scheduled"}

    async def all_succeeded() -> bool:
        count = await runtime.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND state = 'succeeded'", ids
        )
        return bool(count == JOBS)

    await eventually(all_succeeded, timeout=120, what=f"{JOBS} delayed jobs to succeed")
    rows = await runtime.pool.fetch(
        """SELECT j.id, j.run_at,
                  min(s.created_at) FILTER (WHERE s.state = 'enqueued') AS promoted_at,
                  min(s.created_at) FILTER (WHERE s.state = 'processing') AS started_at,
                  array_agg(s.state ORDER BY s.id) AS states
             FROM jobs j JOIN job_states s ON s.job_id = j.id
            WHERE j.id = ANY($1::uuid[])
            GROUP BY j.id, j.run_at""",
        ids,
    )
    assert len(rows) == JOBS
    early = [row["id"] for row in rows if row["started_at"] < row["run_at"] or row["promoted_at"] < row["run_at"]]
    assert early == [], f"{len(early)} jobs started before their run_at"
    assert {tuple(row["states"]) for row in rows} == {("scheduled", "enqueued", "processing", "succeeded")}

    lateness = sorted((row["started_at"] - row["run_at"]).total_seconds() * 1000 for row in rows)
    p99 = lateness[int(len(lateness) * 0.99) - 1]
    print(f"\ndelayed job lateness (run_at → processing) over {JOBS} jobs: "
          f"p50 {statistics.median(lateness):.1f} ms, p99 {p99:.1f} ms, max {lateness[-1]:.1f} ms")
