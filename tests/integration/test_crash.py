"""kill -9 a worker with jobs in flight: nothing is lost, and each interrupted job runs again once its lease expires.

RabbitMQ redelivers the killed worker's unacked messages at once: those it had not claimed run on the second
worker right away; those it was running are dropped there (their leases are live), and the scheduler's lease
sweeper publishes them again when the leases expire, for the second worker to take over.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from shared.runtime import Runtime
from tests.support.environment import TestEnvironment
from tests.support.processes import WORKER, service_process
from tests.support.scheduler import StartScheduler, start_scheduler_fixture  # noqa: F401  (fixture)
from tests.support.waiting import eventually

PREFETCH = 20

pytestmark = [pytest.mark.timeout(400), pytest.mark.both_queue_types]


def worker_process(env: TestEnvironment, log: Path) -> AbstractAsyncContextManager[asyncio.subprocess.Process]:
    return service_process(WORKER, env, log, worker_concurrency=PREFETCH, worker_prefetch=PREFETCH)


async def count(runtime: Runtime, state: str) -> int:
    value: int = await runtime.pool.fetchval("SELECT count(*) FROM jobs WHERE state = $1", state)
    return value


def at_least(runtime: Runtime, state: str, minimum: int) -> Callable[[], object]:
    async def probe() -> bool:
        return await count(runtime, state) >= minimum

    return probe


async def test_kill_9_with_500_jobs_in_flight_loses_none(
    env: TestEnvironment, runtime: Runtime, tmp_path: Path, start_scheduler: StartScheduler
) -> None:
    log = tmp_path / "workers.log"
    await start_scheduler()
    jobs = await asyncio.gather(*(runtime.client.enqueue("test.sleep", {"seconds": 0.2}) for _ in range(500)))
    assert all(job is not None for job in jobs)

    async with worker_process(env, log) as first:
        await eventually(at_least(runtime, "succeeded", 50), timeout=120, what="the first worker to get going")
        # Between one batch's `succeeded` commit and the next claims, nothing may be in flight for an instant:
        # kill at a moment when jobs are.
        await eventually(at_least(runtime, "processing", 1), timeout=30, interval=0.01,
                         what="jobs in flight to kill the worker under")
        killed_at = await runtime.pool.fetchval("SELECT clock_timestamp()")
        os.kill(first.pid, signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
    assert await count(runtime, "processing") > 0

    async with worker_process(env, log) as second:
        await eventually(at_least(runtime, "succeeded", 500), timeout=180, what="all 500 jobs to succeed")
        assert second.returncode is None

    # This test's jobs only: the scheduler also enqueues the seeded recurring jobs.
    runs = await runtime.pool.fetch(
        """SELECT job_id, count(*) FILTER (WHERE s.state = 'processing') AS runs
             FROM job_states s JOIN jobs j ON j.id = s.job_id
            WHERE j.kind = 'test.sleep' GROUP BY job_id"""
    )
    assert len(runs) == 500
    # Counted from the history once all is done: a claim the killed worker sent just before dying may still
    # have committed a moment after its death.
    interrupted = await runtime.pool.fetchval(
        """SELECT count(DISTINCT job_id) FROM job_states s
            WHERE s.state = 'processing' AND split_part(s.worker, ':', 3) = $1
              AND NOT EXISTS (SELECT 1 FROM job_states t
                               WHERE t.job_id = s.job_id AND t.id > s.id AND t.worker = s.worker)""",
        str(first.pid),
    )
    assert 0 < interrupted <= PREFETCH
    rerun = [row["runs"] for row in runs if row["runs"] > 1]
    assert all(row["runs"] >= 1 for row in runs)
    # Only the jobs the killed worker was running ran again, once each: at most the prefetch.
    assert len(rerun) == interrupted <= PREFETCH, f"log in {log}"
    assert max(rerun) == 2
    takeovers = await runtime.pool.fetchval(
        "SELECT count(*) FROM job_states WHERE state = 'processing' AND reason LIKE 'taken over from %'"
    )
    assert takeovers == interrupted
    last_takeover = await runtime.pool.fetchval(
        "SELECT max(created_at) FROM job_states WHERE state = 'processing' AND reason LIKE 'taken over from %'")
    print(f"kill -9: interrupted {interrupted}, run again after their leases expired {len(rerun)}, lost 0; "
          f"the last one restarted {(last_takeover - killed_at).total_seconds():.1f}s after the kill "
          f"(JOB_LEASE_SECONDS {env.settings().job_lease_seconds:g})")

