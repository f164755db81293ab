"""A job's whole life through the real Postgres and RabbitMQ."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from shared.db import jobs as job_queries
from shared.messaging.topology import work_queue
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.environment import Management, TestEnvironment
from tests.support.kinds import TEST_SERVICE
from tests.support.waiting import eventually

pytestmark = pytest.mark.both_queue_types  # delivery, retries, parking and crashes on either


async def states_of(runtime: Runtime, job_id: object) -> list[str]:
    return [row["state"] for row in await job_queries.job_history(runtime.pool, job_id)]  # type: ignore[arg-type]


async def test_a_thousand_jobs_all_succeed_with_full_history(runtime: Runtime, start_worker: StartWorker) -> None:
    await start_worker(concurrency=20)
    jobs = await asyncio.gather(*(runtime.client.enqueue("test.noop", {"n": n}) for n in range(1000)))
    ids = [job.id for job in jobs if job is not None]
    assert len(ids) == 1000

    async def succeeded() -> bool:
        count = await runtime.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND state = 'succeeded'", ids
        )
        return bool(count == 1000)

    await eventually(succeeded, timeout=120, what="1,000 jobs to succeed")
    histories = await runtime.pool.fetch(
        """SELECT job_id, array_agg(state ORDER BY id) AS states FROM job_states
            WHERE job_id = ANY($1::uuid[]) GROUP BY job_id""",
        ids,
    )
    assert len(histories) == 1000
    assert {tuple(row["states"]) for row in histories} == {("enqueued", "processing", "succeeded")}


async def test_handler_log_lines_are_kept_under_the_job(runtime: Runtime, start_worker: StartWorker) -> None:
    await start_worker()
    job = await runtime.client.enqueue("test.log", {"message": "hello from the handler"})
    assert job is not None

    async def logged() -> list[str]:
        return [row["message"] for row in await job_queries.job_logs(runtime.pool, job.id)]

    lines = await eventually(logged, what="the handler's log line in job_logs")
    assert "handler says hello from the handler" in lines


async def test_an_unroutable_publish_leaves_a_committed_job_to_the_relay_instead_of_failing_the_caller(
    runtime: Runtime, env: TestEnvironment, management: Management
) -> None:
    await management.request("DELETE", f"queues/{quote(env.vhost, safe='')}/{work_queue(TEST_SERVICE)}")
    job = await runtime.client.enqueue("test.noop", {"n": 1})
    assert job is not None and job.created
    row = await job_queries.get_job(runtime.pool, job.id)
    assert row is not None and (row["state"], row["published_at"]) == ("enqueued", None)
