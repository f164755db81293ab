"""The outbox relay: committed jobs whose publish never happened are published, once, whatever the broker does."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest

from shared.messaging.topology import work_queue
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.environment import TestEnvironment
from tests.support.kinds import TEST_SERVICE
from tests.support.proxy import running_proxy
from tests.support.scheduler import (  # noqa: F401  (fixtures)
    LogRecorder,
    StartScheduler,
    scheduler_logs_fixture,
    start_scheduler_fixture,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(180)


async def enqueue_without_publishing(runtime: Runtime, count: int) -> list[uuid.UUID]:
    """Jobs committed in a plain transaction: only the relay publishes them (JobClient.transaction would)."""
    async with runtime.pool.acquire() as connection, connection.transaction():
        jobs = [
            await runtime.client.enqueue("test.noop", {"n": n}, connection=connection)  # type: ignore[arg-type]
            for n in range(count)
        ]
    ids = [job.id for job in jobs if job is not None]
    assert len(ids) == count
    unpublished = await runtime.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND state = 'enqueued' AND published_at IS NULL", ids
    )
    assert unpublished == count
    return ids


def count_in(runtime: Runtime, ids: list[uuid.UUID], condition: str) -> object:
    async def probe() -> bool:
        value = await runtime.pool.fetchval(f"SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND {condition}",
                                            ids)
        return bool(value == len(ids))

    return probe


async def test_committed_but_unpublished_jobs_are_relayed_and_succeed(
    runtime: Runtime, start_worker: StartWorker, start_scheduler: StartScheduler
) -> None:
    ids = await enqueue_without_publishing(runtime, 50)
    await start_worker()
    await start_scheduler(outbox_grace_seconds=0.5)
    await eventually(count_in(runtime, ids, "state = 'succeeded'"), timeout=60,  # type: ignore[arg-type]
                     what="the relayed jobs to succeed")
    assert await runtime.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND published_at IS NULL", ids
    ) == 0


async def drain(env: TestEnvironment, queue_name: str) -> list[str]:
    """Every message id waiting in a queue (taken off it)."""
    connection = await aio_pika.connect(env.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        ids = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            ids.append(str(message.message_id))
        return ids


async def test_two_relays_split_the_work_and_publish_each_job_once(
    env: TestEnvironment, runtime: Runtime, start_scheduler: StartScheduler
) -> None:
    ids = await enqueue_without_publishing(runtime, 600)
    # No worker: every message the relays publish stays in the queue to be counted.
    await asyncio.gather(start_scheduler(outbox_grace_seconds=0), start_scheduler(outbox_grace_seconds=0))
    await eventually(count_in(runtime, ids, "published_at IS NOT NULL"), timeout=60,  # type: ignore[arg-type]
                     what="the relays to publish every job")
    published = await drain(env, work_queue(TEST_SERVICE))
    assert sorted(published) == sorted(str(job_id) for job_id in ids)


async def test_the_relay_keeps_going_through_a_broker_outage(
    env: TestEnvironment, runtime: Runtime, start_worker: StartWorker, start_scheduler: StartScheduler,
    scheduler_logs: LogRecorder,
) -> None:
    await start_worker()
    async with running_proxy(env.amqp_url) as proxy:
        scheduler = await start_scheduler(amqp_url=proxy.url(env.amqp_url), outbox_grace_seconds=0.5)
        first = await enqueue_without_publishing(runtime, 20)
        await eventually(count_in(runtime, first, "state = 'succeeded'"), timeout=60,  # type: ignore[arg-type]
                         what="jobs relayed before the outage to succeed")

        await proxy.cut()
        during = await enqueue_without_publishing(runtime, 20)

        async def relay_hit_the_outage() -> bool:
            return bool(scheduler_logs.matching("broker unavailable; the relay tries again")
                        or scheduler_logs.matching("outbox relay round failed; retrying"))

        await eventually(relay_hit_the_outage, timeout=60, what="the relay to meet the outage")
        assert not scheduler.task.done(), "the scheduler exited during the outage"
        assert await runtime.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND published_at IS NULL", during
        ) == len(during)

        await proxy.restore()
        await eventually(count_in(runtime, during, "state = 'succeeded'"), timeout=90,  # type: ignore[arg-type]
                         what="jobs committed during the outage to succeed after it")
        assert not scheduler.task.done()


async def test_a_retry_whose_delayed_message_was_lost_is_republished_once_long_overdue(
    runtime: Runtime, start_worker: StartWorker, start_scheduler: StartScheduler
) -> None:
    lost, pending = await enqueue_without_publishing(runtime, 2)
    # Both wait for a retry and no message exists for either: `lost` was due two minutes ago (its
    # delayed message vanished), `pending` a moment ago (its message may still be on its way).
    await runtime.pool.execute(
        """UPDATE jobs SET state = 'retrying', attempt = 1, published_at = now() - interval '10 minutes',
                           retry_at = now() - CASE WHEN id = $1 THEN interval '2 minutes' ELSE interval '5 seconds' END
            WHERE id = ANY($2::uuid[])""",
        lost, [lost, pending],
    )
    await start_worker()
    await start_scheduler()

    await eventually(count_in(runtime, [lost], "state = 'succeeded'"), timeout=60,
                     what="the overdue retry to be republished and succeed")
    states = await runtime.pool.fetch(
        "SELECT state, count(*) AS n FROM job_states WHERE job_id = $1 GROUP BY state", lost
    )
    assert {row["state"]: row["n"] for row in states}.get("processing") == 1  # run once, not per sweep
    assert await runtime.pool.fetchval("SELECT state FROM jobs WHERE id = $1", pending) == "retrying"
