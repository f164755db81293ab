"""Priority: with a small prefetch, critical jobs overtake low ones waiting in the same service queue."""

from __future__ import annotations

import asyncio
import uuid

from shared.db import job_admin
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.kinds import gate
from tests.support.waiting import eventually


async def test_critical_jobs_run_before_the_remaining_low_ones(runtime: Runtime, start_worker: StartWorker) -> None:
    await start_worker(concurrency=1, worker_prefetch=1)
    # Keep the only consumer busy so what follows accumulates in the broker, as under load.
    name = f"busy-{uuid.uuid4().hex[:6]}"
    busy = await runtime.client.enqueue("test.gate", {"gate": name})
    assert busy is not None

    async def busy_running() -> bool:
        return await job_admin.job_state(runtime.pool, busy.id) == "processing"

    await eventually(busy_running, what="the worker to be busy")

    low = await asyncio.gather(*(runtime.client.enqueue("test.noop", {"n": n}, queue="low") for n in range(200)))
    critical = [await runtime.client.enqueue("test.noop", {"n": n}, queue="critical") for n in range(5)]
    low_ids = [job.id for job in low if job is not None]
    critical_ids = [job.id for job in critical if job is not None]
    gate(name).set()

    async def all_done() -> bool:
        count = await runtime.pool.fetchval("SELECT count(*) FROM jobs WHERE state = 'succeeded'")
        return bool(count == 206)

    await eventually(all_done, timeout=120, what="all 206 jobs to succeed")
    order = await runtime.pool.fetch(
        "SELECT job_id FROM job_states WHERE state = 'processing' AND job_id <> $1 ORDER BY id", busy.id
    )
    started = [row["job_id"] for row in order]
    assert len(started) == 205
    assert set(started[:5]) == set(critical_ids)
    assert set(started[5:]) == set(low_ids)
