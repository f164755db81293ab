"""Confirmed publishes are stamped a moment later, together; a claimed job is not written again; a stopping
process stamps what it still holds."""

from __future__ import annotations

import asyncio

import asyncpg

from shared.db import jobs as job_queries
from shared.published_marks import PublishedMarks
from shared.runtime import Runtime
from tests.support.waiting import eventually


async def test_confirmed_enqueues_are_stamped_together_a_moment_later(
    runtime: Runtime, db: asyncpg.Connection
) -> None:
    jobs = await asyncio.gather(*(runtime.client.enqueue("test.noop", {"n": n}) for n in range(20)))
    ids = [job.id for job in jobs if job is not None]
    await eventually(lambda: db.fetchval("SELECT count(*) = 20 FROM jobs WHERE id = ANY($1::uuid[]) "
                                         "AND published_at IS NOT NULL", ids), timeout=10, what="the 20 stamps")
    stamps = await db.fetch("SELECT DISTINCT published_at FROM jobs WHERE id = ANY($1::uuid[])", ids)
    print(f"20 enqueues stamped by {len(stamps)} statement(s)")
    assert len(stamps) < 20  # grouped (one statement has one now()), not one write per job


async def test_a_job_claimed_before_its_stamp_is_not_written_again(runtime: Runtime, db: asyncpg.Connection) -> None:
    job = await runtime.client.enqueue("test.noop", {"n": 1})
    assert job is not None
    assert job.id in await job_queries.claim_many(db, "worker-1", [(job.id, 0)], lease_seconds=30)
    stamped_by_claim = await db.fetchval("SELECT published_at FROM jobs WHERE id = $1", job.id)
    assert stamped_by_claim is not None  # the delivery proved the publish
    await runtime.client.close()  # the pending stamp goes out now
    row = await db.fetchrow("SELECT published_at, state FROM jobs WHERE id = $1", job.id)
    assert row is not None and (row["published_at"], row["state"]) == (stamped_by_claim, "processing")


async def test_close_stamps_what_is_pending_without_waiting_out_the_delay(
    runtime: Runtime, db: asyncpg.Connection
) -> None:
    async with runtime.pool.acquire() as connection, connection.transaction():  # committed, not published
        job = await runtime.client.enqueue("test.noop", {"n": 2}, connection=connection)  # type: ignore[arg-type]
    assert job is not None
    marks = PublishedMarks(runtime.pool, after_seconds=3600)
    marks.add([job.id])
    await asyncio.wait_for(marks.close(), timeout=10)
    assert await db.fetchval("SELECT published_at IS NOT NULL FROM jobs WHERE id = $1", job.id)
