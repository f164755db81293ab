"""RabbitMQ unreachable for 5 s while 1,000 jobs are enqueued and consumed: nothing lost, nobody exits."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.runtime import Runtime, open_runtime
from shared.worker import run_worker
from tests.support.environment import TestEnvironment
from tests.support.kinds import TEST_HANDLERS, TEST_SERVICE, test_registry
from tests.support.proxy import running_proxy
from tests.support.scheduler import StartScheduler, start_scheduler_fixture  # noqa: F401  (fixture)
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)
log = logging.getLogger(__name__)

OUTAGE_SECONDS = 5.0
# Every count is of this test's kind: the scheduler runs the seeded recurring jobs too (reap-dead-servers fires
# each minute), and their rows are not the 1,000 this test enqueued.


async def enqueue_jobs(runtime: Runtime, count: int) -> None:
    # Short sleeps rather than no-ops, so the worker holds a backlog and jobs in flight when the link drops.
    for start in range(0, count, 50):
        jobs = await asyncio.gather(
            *(runtime.client.enqueue("test.sleep", {"seconds": 0.05}) for _ in range(start, min(start + 50, count)))
        )
        assert all(job is not None for job in jobs)


async def test_a_5s_broker_outage_delays_jobs_but_loses_none(
    env: TestEnvironment, start_scheduler: StartScheduler
) -> None:
    async with running_proxy(env.amqp_url) as proxy:
        settings = env.settings(amqp_url=proxy.url(env.amqp_url), outbox_grace_seconds=1.0)
        # The scheduler's outbox relay, behind the same proxy, publishes what the outage left unpublished.
        await start_scheduler(amqp_url=settings.amqp_url, outbox_grace_seconds=settings.outbox_grace_seconds)
        stop = asyncio.Event()
        worker = asyncio.create_task(
            run_worker(settings, stop, service=TEST_SERVICE, registry=test_registry(),
                       handlers=TEST_HANDLERS, default_concurrency=20)
        )
        try:
            async with open_runtime(settings, test_registry()) as runtime:
                await enqueue_jobs(runtime, 400)

                in_flight_at_cut = await runtime.pool.fetchval(
                    "SELECT count(*) FROM jobs WHERE kind = 'test.sleep' AND state IN ('enqueued', 'processing')"
                )
                await proxy.cut()
                outage = asyncio.create_task(asyncio.sleep(OUTAGE_SECONDS))
                await enqueue_jobs(runtime, 200)  # every publish here fails; the rows wait
                await outage
                unpublished_during_outage = await runtime.pool.fetchval(
                    "SELECT count(*) FROM jobs WHERE kind = 'test.sleep' AND published_at IS NULL"
                )
                await proxy.restore()

                await enqueue_jobs(runtime, 400)

                async def all_succeeded() -> bool:
                    count = await runtime.pool.fetchval(
                        "SELECT count(*) FROM jobs WHERE kind = 'test.sleep' AND state = 'succeeded'"
                    )
                    assert not worker.done(), "the worker exited"
                    return bool(count == 1000)

                await eventually(all_succeeded, timeout=180, what="all 1,000 jobs to succeed")
                assert await runtime.pool.fetchval("SELECT count(*) FROM jobs WHERE kind = 'test.sleep'") == 1000
                assert in_flight_at_cut > 0, "the outage should hit jobs waiting or running"
                # The client never retries a publish: the rows it left unpublished were published by the relay.
                assert unpublished_during_outage >= 200
                unpublished_after = await runtime.pool.fetchval(
                    "SELECT count(*) FROM jobs WHERE kind = 'test.sleep' AND published_at IS NULL"
                )
                assert unpublished_after == 0
                assert proxy.connections_accepted >= 4  # both processes reconnected after the outage
                assert runtime.broker.is_connected
            assert not worker.done()
        finally:
            stop.set()
            await asyncio.wait_for(worker, 60)
