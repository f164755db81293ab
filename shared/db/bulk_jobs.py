"""Many new jobs in one statement: the write of `JobClient.enqueue_many` and `POST /api/jobs/batch`.

Kept apart from shared.db.jobs (the claim, lease and outcome statements) so the two evolve independently.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import asyncpg

from shared.db.jobs import NewJob
from shared.db.pool import Executor


async def insert_jobs(executor: Executor, jobs: Sequence[NewJob]) -> dict[uuid.UUID, asyncpg.Record]:
    """Insert every job in one statement; the rows written, by id.

    A job whose idempotency key exists already (in the table, or earlier in the same batch) is skipped,
    as `insert_job` skips it; the caller looks those up. `scheduled` or `enqueued` is decided by
    Postgres' clock, row by row, exactly as for one job.
    """
    if not jobs:
        return {}
    rows = await executor.fetch(
        """INSERT INTO jobs (id, kind, args, queue, service, priority, state, max_attempts, run_at,
                             idempotency_key, parent_id, state_reason)
           SELECT j.id, j.kind, j.args::jsonb, j.queue, j.service, j.priority,
                  coalesce(j.state, CASE WHEN due.run_at > now() THEN 'scheduled' ELSE 'enqueued' END),
                  j.max_attempts, due.run_at, j.idempotency_key, j.parent_id, j.state_reason
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
                         $8::int[], $9::timestamptz[], $10::text[], $11::uuid[], $12::text[], $13::float8[],
                         $14::int[])
                  AS j(id, kind, args, queue, service, priority, state, max_attempts, run_at, idempotency_key,
                       parent_id, state_reason, delay_seconds, ordinal)
             CROSS JOIN LATERAL (SELECT coalesce(j.run_at, now() + make_interval(secs => coalesce(j.delay_seconds, 0)))
                                        AS run_at) AS due
            ORDER BY j.ordinal  -- the first of two items with one idempotency key is the one written
           ON CONFLICT DO NOTHING
           RETURNING *""",
        [job.id for job in jobs], [job.kind for job in jobs], [json.dumps(job.args) for job in jobs],
        [job.queue for job in jobs], [job.service for job in jobs], [job.priority for job in jobs],
        [None if job.state is None else job.state.value for job in jobs], [job.max_attempts for job in jobs],
        [job.run_at for job in jobs], [job.idempotency_key for job in jobs], [job.parent_id for job in jobs],
        [job.state_reason for job in jobs], [job.delay_seconds for job in jobs], list(range(len(jobs))),
    )
    return {row["id"]: row for row in rows}


async def find_by_idempotency_keys(executor: Executor, keys: Sequence[str]) -> dict[str, asyncpg.Record]:
    rows = await executor.fetch("SELECT * FROM jobs WHERE idempotency_key = ANY($1::text[])", list(keys))
    return {row["idempotency_key"]: row for row in rows}
