"""Graceful shutdown: in-flight jobs finish within the timeout; longer ones go back to the queue, never parked."""

from __future__ import annotations

import uuid

from shared.db import jobs as job_queries
from shared.messaging.topology import work_queue
from shared.worker import Runtime
from tests.conftest import StartWorker
from tests.support.broker_probe import consumer_count, dead_letters
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
        return await job_queries.job_state(runtime.pool, job.id) == "processing"

    await eventually(running, what="the job to start")
    stop.set()  # what SIGTERM does

    async def stopped_consuming() -> bool:
        return await consumer_count(env.amqp_url, work_queue(TEST_SERVICE)) == 0

    await eventually(stopped_consuming, what="the worker to stop consuming")
    gate(name).set()

    async def succeeded() -> bool:
        return await job_queries.job_state(runtime.pool, job.id) == "succeeded"

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
        return await job_queries.job_state(runtime.pool, job.id) == state

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
