"""A worker's claims and `succeeded` outcomes waiting at the same moment share one statement and one commit,
and answer exactly as the two statements would: fenced outcomes refused, claims taken only where allowed, one
history row per transition; an outcome Postgres cannot store never fails the claims beside it."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from shared.db import jobs as job_queries
from shared.messaging.consumer import Consumer
from shared.retry import RetryPolicy
from shared.runtime import Runtime
from tests.support.kinds import TEST_SERVICE, test_registry


async def enqueued(runtime: Runtime, count: int) -> list[uuid.UUID]:
    jobs = [await runtime.client.enqueue("test.noop", {"n": n}) for n in range(count)]
    return [job.id for job in jobs if job is not None]


async def history(db: asyncpg.Connection, job_id: uuid.UUID) -> list[str]:
    return [row["state"] for row in await db.fetch("SELECT state FROM job_states WHERE job_id = $1 ORDER BY id",
                                                   job_id)]


async def test_one_statement_claims_and_records_outcomes_as_two_would(
    runtime: Runtime, db: asyncpg.Connection
) -> None:
    finishing, expired, others, fresh = await enqueued(runtime, 4)
    claimed = await job_queries.claim_many(db, "worker-1", [(finishing, 0), (expired, 0)], lease_seconds=30)
    assert set(claimed) == {finishing, expired}
    assert set(await job_queries.claim_many(db, "worker-2", [(others, 0)], lease_seconds=30)) == {others}
    # worker-1 froze past one lease: its outcome for that job must not count.
    await db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", expired)

    claimed, succeeded = await job_queries.claim_many_and_mark_succeeded(
        db, "worker-1", [(fresh, 0), (others, 1)],  # `others` is worker-2's, under a live lease
        [(finishing, 1, {"sent": 3}), (expired, 1, None)], lease_seconds=30,
    )
    print(f"claimed {len(claimed)}, succeeded {len(succeeded)}")
    assert set(claimed) == {fresh} and claimed[fresh]["kind"] == "test.noop" and claimed[fresh]["attempt"] == 1
    assert succeeded == {finishing}
    states = dict(await db.fetch("SELECT id, state FROM jobs WHERE id = ANY($1::uuid[])",
                                 [finishing, expired, others, fresh]))
    assert states == {finishing: "succeeded", expired: "processing", others: "processing", fresh: "processing"}
    assert await db.fetchval("SELECT result::text FROM jobs WHERE id = $1", finishing) == '{"sent": 3}'
    assert await db.fetchval("SELECT worker FROM jobs WHERE id = $1", others) == "worker-2"
    assert await history(db, finishing) == ["enqueued", "processing", "succeeded"]
    assert await history(db, fresh) == ["enqueued", "processing"]
    assert await history(db, others) == ["enqueued", "processing"]


async def running_and_delivered(runtime: Runtime, db: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    """A job worker-1 runs, about to finish, and a job just delivered to it."""
    finishing, delivered = await enqueued(runtime, 2)
    assert await job_queries.claim_many(db, "worker-1", [(finishing, 0)], lease_seconds=30)
    return finishing, delivered


@pytest.fixture
def consumer(runtime: Runtime) -> Consumer:
    """Not consuming: its writes are called directly, so a claim and an outcome meet in one flush."""
    return Consumer(
        service=TEST_SERVICE, worker_id="worker-1", broker=runtime.broker, pool=runtime.pool, client=runtime.client,
        registry=test_registry(), handlers={}, default_retry=RetryPolicy(max_attempts=3, delays=(1,)), prefetch=1,
        concurrency=1, lease_seconds=30, renew_every_seconds=10, fence_after_seconds=25,
    )


async def test_an_outcome_postgres_refuses_does_not_fail_the_claims_beside_it(
    runtime: Runtime, db: asyncpg.Connection, consumer: Consumer
) -> None:
    finishing, delivered = await running_and_delivered(runtime, db)
    # Submitted together, so both wait for the same write; jsonb cannot hold a NUL character.
    claim, outcome = await asyncio.gather(consumer._claim(delivered, 0),
                                          consumer._mark_succeeded(finishing, 1, "bad\x00result"),
                                          return_exceptions=True)
    print(f"claim: {type(claim).__name__}, outcome: {outcome!r}")
    assert isinstance(claim, asyncpg.Record) and claim["id"] == delivered
    assert isinstance(outcome, asyncpg.PostgresError)
    states = dict(await db.fetch("SELECT id, state FROM jobs WHERE id = ANY($1::uuid[])", [finishing, delivered]))
    assert states == {finishing: "processing", delivered: "processing"}


async def test_claims_and_outcomes_of_one_flush_commit_together(
    runtime: Runtime, db: asyncpg.Connection, consumer: Consumer
) -> None:
    finishing, delivered = await running_and_delivered(runtime, db)
    claim, recorded = await asyncio.gather(consumer._claim(delivered, 0),
                                           consumer._mark_succeeded(finishing, 1, {"ok": True}))
    assert claim is not None and claim["id"] == delivered and recorded is True
    # One statement: the claim's and the outcome's history rows belong to one transaction.
    transactions = await db.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM job_states WHERE (job_id = $1 AND state = 'processing') "
        "OR (job_id = $2 AND state = 'succeeded')", delivered, finishing)
    assert transactions == 1
