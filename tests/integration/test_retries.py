"""Failed attempts wait in RabbitMQ delay queues; exhausted jobs end in the parking lot; requeue revives them."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest

from shared.db import job_admin
from shared.db import jobs as job_queries
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.broker_probe import dead_letters
from tests.support.environment import TestEnvironment
from tests.support.kinds import BROKEN
from tests.support.waiting import eventually

pytestmark = pytest.mark.both_queue_types  # delivery, retries, parking and crashes on either


async def history(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[asyncpg.Record]:
    return await job_queries.job_history(pool, job_id)


async def wait_for_state(runtime: Runtime, job_id: uuid.UUID, state: str, timeout: float = 60) -> None:
    async def reached() -> bool:
        return await job_admin.job_state(runtime.pool, job_id) == state

    await eventually(reached, timeout=timeout, what=f"job {job_id} to be {state}")


async def test_flaky_job_succeeds_at_attempt_three_after_the_configured_waits(
    runtime: Runtime, start_worker: StartWorker
) -> None:
    await start_worker(retry_delays=(1, 2))
    job = await runtime.client.enqueue("test.flaky", {"failures": 2})
    assert job is not None

    await wait_for_state(runtime, job.id, "succeeded")
    rows = await history(runtime.pool, job.id)
    assert [(row["state"], row["attempt"]) for row in rows] == [
        ("enqueued", 0),
        ("processing", 1), ("retrying", 1),
        ("processing", 2), ("retrying", 2),
        ("processing", 3), ("succeeded", 3),
    ]
    assert rows[2]["reason"] == "error; retry in 1s" and "planned failure 1 of 2" in rows[2]["error"]
    assert rows[4]["reason"] == "error; retry in 2s"
    # The waits were observed: no attempt started before its delay queue let it go.
    assert rows[3]["created_at"] - rows[2]["created_at"] >= timedelta(seconds=1)
    assert rows[5]["created_at"] - rows[4]["created_at"] >= timedelta(seconds=2)


async def test_exhausted_job_is_parked_and_an_operator_requeue_revives_it(
    env: TestEnvironment, runtime: Runtime, start_worker: StartWorker
) -> None:
    switch = f"smtp-{uuid.uuid4().hex[:6]}"
    BROKEN.add(switch)
    await start_worker(retry_attempts=3, retry_delays=(1,))
    job = await runtime.client.enqueue("test.until_fixed", {"switch": switch})
    assert job is not None

    await wait_for_state(runtime, job.id, "failed")
    row = await job_queries.get_job(runtime.pool, job.id)
    assert row is not None and row["attempt"] == 3
    assert row["state_reason"] == "error: attempts exhausted (3 of 3)"
    assert [r["state"] for r in await history(runtime.pool, job.id)].count("processing") == 3

    letters = await eventually(lambda: dead_letters(env.amqp_url), what="the job in jobs.dead")
    assert len(letters) == 1
    assert letters[0].headers["job_id"] == str(job.id)
    assert letters[0].reason.startswith("error: attempts exhausted (3 of 3)")
    assert f"switch {switch} is broken" in letters[0].reason

    BROKEN.discard(switch)
    requeued = await job_admin.requeue(runtime.pool, job.id, "requeued by operator")
    assert requeued is not None
    assert await runtime.client.publish([requeued]) == 1

    await wait_for_state(runtime, job.id, "succeeded")
    states = [r["state"] for r in await history(runtime.pool, job.id)]
    assert states[-3:] == ["enqueued", "processing", "succeeded"]


async def test_a_long_retry_queued_first_never_holds_up_a_short_one(
    runtime: Runtime, start_worker: StartWorker
) -> None:
    await start_worker(retry_delays=(1,))
    slow = await runtime.client.enqueue("test.slow_retry", {})  # fails, then waits 30 s
    assert slow is not None
    await wait_for_state(runtime, slow.id, "retrying")

    quick = await runtime.client.enqueue("test.flaky", {"failures": 1})  # fails, then waits 1 s
    assert quick is not None
    await wait_for_state(runtime, quick.id, "succeeded")

    slow_rows = await history(runtime.pool, slow.id)
    quick_rows = await history(runtime.pool, quick.id)
    slow_waiting_since = next(row["created_at"] for row in slow_rows if row["state"] == "retrying")
    quick_failed_at = next(row["created_at"] for row in quick_rows if row["state"] == "retrying")
    quick_second_attempt = next(
        row["created_at"] for row in quick_rows if row["state"] == "processing" and row["attempt"] == 2
    )
    assert slow_waiting_since < quick_failed_at  # both were in flight, the 30 s one first
    assert quick_second_attempt - quick_failed_at >= timedelta(seconds=1)
    # The short retry came back while the long one was still waiting out its 30 s.
    assert [(row["state"], row["attempt"]) for row in slow_rows][-1] == ("retrying", 1)
    assert quick_second_attempt < slow_waiting_since + timedelta(seconds=30)


async def test_a_handler_over_its_timeout_is_a_failed_attempt_with_reason_timeout(
    runtime: Runtime, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await runtime.client.enqueue("test.sleep", {"seconds": 5}, max_attempts=1)  # the kind allows 2 s
    assert job is not None

    await wait_for_state(runtime, job.id, "failed")
    failed = (await history(runtime.pool, job.id))[-1]
    assert failed["state"] == "failed"
    assert failed["reason"] == "timeout: attempts exhausted (1 of 1)"
    assert failed["error"] == "timed out after 2s"
    assert failed["duration_ms"] < 5000  # cut off by the timeout, not run to the end of its sleep


async def test_the_retries_of_one_failing_burst_are_spread_over_the_jitter_buckets(
    runtime: Runtime, start_worker: StartWorker
) -> None:
    # A 4 s delay with ±50 % jitter: buckets of 2, 3, 4, 5 and 6 s (shared/retry.py).
    await start_worker(retry_attempts=2, retry_delays=(4,), retry_jitter=0.5)
    jobs = [await runtime.client.enqueue("test.flaky", {"failures": 1}) for _ in range(30)]
    ids = [job.id for job in jobs if job is not None]

    async def all_succeeded() -> bool:
        done = await runtime.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND state = 'succeeded'", ids)
        return bool(done == len(ids))

    await eventually(all_succeeded, timeout=90, what="every job to succeed at its second attempt")
    planned: list[int] = []
    for job_id in ids:
        rows = await history(runtime.pool, job_id)
        retrying = next(row for row in rows if row["state"] == "retrying")
        second = next(row for row in rows if row["state"] == "processing" and row["attempt"] == 2)
        delay = int(retrying["reason"].removeprefix("error; retry in ").removesuffix("s"))
        assert second["created_at"] - retrying["created_at"] >= timedelta(seconds=delay)  # never early
        planned.append(delay)
    spread = {delay: planned.count(delay) for delay in sorted(set(planned))}
    print(f"retry delays of a burst of 30 (4 s ± 50 %): {spread}")
    assert set(planned) <= {2, 3, 4, 5, 6}
    assert len(set(planned)) >= 3  # one wave became several (all in two buckets: p < 1e-10)
