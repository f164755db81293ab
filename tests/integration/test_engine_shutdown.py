"""Graceful shutdown: in-flight jobs finish within the timeout; longer ones go back to the queue, never parked."""

from __future__ import annotations

import uuid

from shared.db import job_admin
from shared.db import jobs as job_queries
from shared.messaging.topology import work_queue
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.broker_probe import consumer_count, dead_letters, ready_count
from tests.support.environment import TestEnvironment
from tests.support.kinds import TEST_SERVICE, gate
from tests.support.waiting import eventually


async def test_a_job_within_the_shutdown_timeout_finishes(
    env: TestEnvironment, runtime: Runtime, start_worker: StartWorker
) -> None:
    stop = await start_worker(shutdown_timeout_seconds=30)
    name = f"finish-{uuid.uuid4().hex[:6]}"
    job = await runtime.client.enqueue("test.gate", {"gate": name})
    assert job is not None

    async def running() -> bool:
        return await job_admin.job_state(runtime.pool, job.id) == "processing"

    await eventually(running, what="the job to start")
    stop.set()  # what SIGTERM does

    async def stopped_consuming() -> bool:
        return await consumer_count(env.amqp_url, work_queue(TEST_SERVICE)) == 0

    await eventually(stopped_consuming, what="the worker to stop consuming")
    gate(name).set()

    async def succeeded() -> bool:
        return await job_admin.job_state(runtime.pool, job.id) == "succeeded"

    await eventually(succeeded, what="the in-flight job to finish during shutdown")
    assert [row["state"] for row in await job_queries.job_history(runtime.pool, job.id)] == [
        "enqueued", "processing", "succeeded",
    ]


async def test_a_job_longer_than_the_timeout_is_put_back_and_runs_on_the_next_worker(
    env: TestEnvironment, runtime: Runtime, start_worker: StartWorker
) -> None:
    stop = await start_worker(shutdown_timeout_seconds=0.5)
    name = f"long-{uuid.uuid4().hex[:6]}"
    job = await runtime.client.enqueue("test.gate", {"gate": name})
    assert job is not None

    async def state_is(state: str) -> bool:
        return await job_admin.job_state(runtime.pool, job.id) == state

    await eventually(lambda: state_is("processing"), what="the job to start")
    stop.set()

    await eventually(lambda: state_is("enqueued"), what="the job to be put back")
    row = await job_queries.get_job(runtime.pool, job.id)
    assert row is not None
    assert (row["state_reason"], row["attempt"], row["worker"]) == ("worker shutdown", 0, None)
    assert await dead_letters(env.amqp_url) == []

    gate(name).set()
    await start_worker()
    await eventually(lambda: state_is("succeeded"), what="the job to run on the next worker")
    history = await job_queries.job_history(runtime.pool, job.id)
    assert [(r["state"], r["attempt"]) for r in history] == [
        ("enqueued", 0), ("processing", 1), ("enqueued", 0), ("processing", 1), ("succeeded", 1),
    ]
    assert history[1]["worker"] != history[3]["worker"]
    assert await dead_letters(env.amqp_url) == []


async def test_deliveries_prefetched_beyond_the_concurrency_do_not_start_during_shutdown(
    env: TestEnvironment, runtime: Runtime, start_worker: StartWorker
) -> None:
    stop = await start_worker(concurrency=1, worker_prefetch=3, shutdown_timeout_seconds=30)
    name = f"busy-{uuid.uuid4().hex[:6]}"
    busy = await runtime.client.enqueue("test.gate", {"gate": name})
    assert busy is not None
    await eventually(lambda: _state_is(runtime, busy.id, "processing"), what="the gated job to start")
    waiting = [await runtime.client.enqueue("test.noop", {"n": n}) for n in range(2)]
    waiting_ids = [job.id for job in waiting if job is not None]

    async def all_delivered() -> bool:
        return await ready_count(env.amqp_url, work_queue(TEST_SERVICE)) == 0

    await eventually(all_delivered, what="both jobs to be prefetched by the busy worker")
    stop.set()
    await eventually(lambda: _consumers_gone(env), what="the worker to stop consuming")
    gate(name).set()

    async def worker_gone() -> bool:
        return await runtime.pool.fetchval("SELECT count(*) FROM servers") == 0

    await eventually(worker_gone, what="the worker to finish its shutdown")
    assert await job_admin.job_state(runtime.pool, busy.id) == "succeeded"
    for job_id in waiting_ids:
        assert [row["state"] for row in await job_queries.job_history(runtime.pool, job_id)] == ["enqueued"]

    await start_worker()
    for job_id in waiting_ids:
        await eventually(lambda job_id=job_id: _state_is(runtime, job_id, "succeeded"),  # type: ignore[misc]
                         what="the handed-back jobs to run on the next worker")


async def _state_is(runtime: Runtime, job_id: uuid.UUID, state: str) -> bool:
    return await job_admin.job_state(runtime.pool, job_id) == state


async def _consumers_gone(env: TestEnvironment) -> bool:
    return await consumer_count(env.amqp_url, work_queue(TEST_SERVICE)) == 0
