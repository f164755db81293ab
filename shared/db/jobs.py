"""Named queries on the path of a job: insert, look up, claim, lease, record outcomes, and the scheduler's
sweeps (due, unpublished, stale, lease-expired, overdue); with the job's own rows in job_states (history),
job_logs and batches, and the consumer's dropped-delivery counts.

Every state change goes through a guard built from shared.jobs. Many jobs inserted in one statement:
shared.db.bulk_jobs. What an operator does (search, count, chart, requeue, enqueue now, delete, cancel):
shared.db.job_admin.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.db.pool import Executor
from shared.jobs import FINAL_STATES, JobState, sources_of


# Statements that change many rows lock them in id order first, so two of them running at once
# (a worker's claims, a client's publish marks, an operator's bulk delete) cannot deadlock. They read the rows
# by id alone and test every condition on `locked`, never on the updated `jobs`: a condition on `jobs.state`
# or `jobs.worker` lets Postgres' generic plan (a prepared statement's plan after its fifth run) walk a partial
# index of every `enqueued` or `processing` entry instead of looking the ids up, and dead entries stay in those
# indexes until a vacuum, so each claim or outcome got slower with every job run before it (1.5 ms per job
# after 20,000, measured with autovacuum off). Use as `WITH {LOCKED} UPDATE jobs ... FROM locked WHERE
# jobs.id = locked.id AND locked.<column> ...`, returning `jobs.*` columns.
def locked(ids: str) -> str:
    """The `locked` CTE of the rows whose ids are the uuid[] expression `ids`."""
    return f"locked AS MATERIALIZED (SELECT * FROM jobs WHERE id = ANY({ids}) ORDER BY id FOR UPDATE)"


LOCKED = locked("$1::uuid[]")



CLAIMED_COLUMNS = "id, kind, args, queue, service, priority, attempt, max_attempts, run_at, parent_id"
# The same columns qualified, for UPDATE … FROM statements where `id` alone would be ambiguous.
CLAIMED_RETURNING = ", ".join(f"jobs.{column}" for column in CLAIMED_COLUMNS.split(", "))


@dataclass(frozen=True)
class NewJob:
    id: uuid.UUID
    kind: str
    args: dict[str, Any]
    queue: str
    service: str
    priority: int
    # None: Postgres decides with its own clock, `scheduled` when run_at is still ahead, else `enqueued`;
    # the clock of the host that enqueues never matters.
    state: JobState | None
    max_attempts: int
    run_at: datetime | None  # None: now() + delay_seconds, by Postgres' clock
    idempotency_key: str | None = None
    recurring_id: str | None = None
    fire_time: datetime | None = None
    parent_id: uuid.UUID | None = None
    state_reason: str | None = None
    delay_seconds: float | None = None
    after_id: uuid.UUID | None = None  # a continuation of this job ...
    after_on: str | None = None  # ... when it "succeeded" or "finished"
    batch_id: uuid.UUID | None = None  # a child of this batch
    after_batch_id: uuid.UUID | None = None  # the callback of this batch


async def insert_job(executor: Executor, job: NewJob) -> asyncpg.Record | None:
    """The inserted row, or None when the idempotency key or (recurring_id, fire_time) exists."""
    return await executor.fetchrow(
        """INSERT INTO jobs (id, kind, args, queue, service, priority, state, max_attempts, run_at,
                             idempotency_key, recurring_id, fire_time, parent_id, state_reason,
                             after_id, after_on, batch_id, after_batch_id)
           SELECT $1, $2, $3, $4, $5, $6,
                  coalesce($7, CASE WHEN due.run_at > now() THEN 'scheduled' ELSE 'enqueued' END),
                  $8, due.run_at, $10, $11, $12, $13, $14, $16, $17, $18, $19
             FROM (SELECT coalesce($9::timestamptz,
                                   now() + make_interval(secs => coalesce($15::float8, 0))) AS run_at) AS due
           ON CONFLICT DO NOTHING
           RETURNING *""",
        job.id, job.kind, job.args, job.queue, job.service, job.priority,
        None if job.state is None else job.state.value, job.max_attempts, job.run_at, job.idempotency_key,
        job.recurring_id, job.fire_time, job.parent_id, job.state_reason, job.delay_seconds,
        job.after_id, job.after_on, job.batch_id, job.after_batch_id,
    )


async def find_by_idempotency_key(executor: Executor, key: str) -> asyncpg.Record | None:
    return await executor.fetchrow("SELECT * FROM jobs WHERE idempotency_key = $1", key)


async def get_job(executor: Executor, job_id: uuid.UUID) -> asyncpg.Record | None:
    return await executor.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)


async def job_idempotency_key(executor: Executor, job_id: uuid.UUID) -> str | None:
    key: str | None = await executor.fetchval("SELECT idempotency_key FROM jobs WHERE id = $1", job_id)
    return key


async def job_history(executor: Executor, job_id: uuid.UUID) -> list[asyncpg.Record]:
    return await executor.fetch("SELECT * FROM job_states WHERE job_id = $1 ORDER BY id", job_id)


async def job_logs(executor: Executor, job_id: uuid.UUID, limit: int = 1000) -> list[asyncpg.Record]:
    return await executor.fetch(
        # By time: a run's lines are written in batches with the time each was logged, so ids are not in order.
        "SELECT * FROM job_logs WHERE job_id = $1 ORDER BY created_at, id LIMIT $2", job_id, limit
    )


async def mark_published(executor: Executor, job_ids: Sequence[uuid.UUID]) -> None:
    """Stamp confirmed publishes, so the outbox relay leaves them alone. A job claimed meanwhile carries the stamp
    of its claim already: its row is neither locked nor written again."""
    await executor.execute(
        """WITH locked AS MATERIALIZED (SELECT id FROM jobs WHERE id = ANY($1::uuid[]) AND published_at IS NULL
                                         ORDER BY id FOR UPDATE)
           UPDATE jobs SET published_at = now() FROM locked WHERE jobs.id = locked.id""",
        list(job_ids),
    )


async def claim_many(
    executor: Executor, worker: str, deliveries: Sequence[tuple[uuid.UUID, int]], *, lease_seconds: float
) -> dict[uuid.UUID, asyncpg.Record]:
    """Take jobs for `worker` under a fresh lease, for many (job id, message attempt) deliveries in one statement.

    A delivery takes an `enqueued` job; a `retrying` one only when it carries the attempt that failed and the
    retry is due by Postgres' clock; a `processing` one only when its lease has expired, the delivery is for
    its current attempt (the sweeper's copy) and attempts are left. Never because a message was redelivered:
    a live lease means its holder may still be running the job. A job delivered twice in one batch is claimed
    once; the caller gives it to one delivery only.
    """
    rows = await executor.fetch(
        f"WITH {LOCKED} {_claim_update(ids='$1', worker='$2', attempts='$3', lease_seconds='$4')}",
        [job_id for job_id, _ in deliveries], worker, [attempt for _, attempt in deliveries], lease_seconds,
    )
    return {row["id"]: row for row in rows}


def _claim_update(*, ids: str, worker: str, attempts: str, lease_seconds: str) -> str:
    """claim_many's UPDATE over `locked`, its parameters named by the caller (claimed together with outcomes too)."""
    return f"""UPDATE jobs
               SET state = 'processing', attempt = jobs.attempt + 1, worker = {worker},
                   lease_expires_at = now() + make_interval(secs => {lease_seconds}),
                   started_at = now(), updated_at = now(), finished_at = NULL,
                   limit_wait = NULL, limit_slot_at = NULL,
                   -- a delivery proves the publish, whose own stamp (JobClient's, a moment after the
                   -- confirm) may not have been written yet
                   published_at = coalesce(jobs.published_at, now()),
                   state_reason = CASE WHEN jobs.state = 'processing'
                                       THEN 'taken over from ' || coalesce(jobs.worker, 'unknown worker')
                                            || ': its lease expired' END
              FROM locked JOIN (SELECT id, array_agg(attempt) AS attempts
                                  FROM unnest({ids}::uuid[], {attempts}::int[]) AS d(id, attempt) GROUP BY id) AS d
                   USING (id)
             WHERE jobs.id = locked.id
               AND (locked.state = 'enqueued'
                    OR (locked.state = 'retrying' AND locked.attempt = ANY(d.attempts)
                        AND coalesce(locked.retry_at, '-infinity') <= now())
                    OR (locked.state = 'processing' AND locked.attempt = ANY(d.attempts)
                        AND coalesce(locked.lease_expires_at, '-infinity') <= now()
                        AND locked.attempt < locked.max_attempts))
         RETURNING {CLAIMED_RETURNING}"""


async def delivery_verdict(executor: Executor, job_id: uuid.UUID) -> asyncpg.Record | None:
    """Why a delivery was not claimed: the job's state and whether its retry is due or its lease live."""
    return await executor.fetchrow(
        """SELECT state, attempt, max_attempts, worker,
                  coalesce(retry_at, '-infinity') > now() AS retry_early,
                  coalesce(lease_expires_at, '-infinity') > now() AS lease_live
             FROM jobs WHERE id = $1""",
        job_id,
    )


async def renew_leases(
    executor: Executor, worker: str, jobs: Sequence[tuple[uuid.UUID, int]], lease_seconds: float
) -> set[uuid.UUID]:
    """Extend the leases of the jobs `worker` still holds, in one statement; the ids that are still its own.

    A job missing from the answer was taken over, deleted or finished meanwhile: its run must stop.
    """
    rows = await executor.fetch(
        f"""WITH {LOCKED}
            UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $4)
              FROM locked JOIN unnest($1::uuid[], $2::int[]) AS h(id, attempt) USING (id)
             WHERE jobs.id = locked.id
               AND locked.state = 'processing' AND locked.worker = $3 AND locked.attempt = h.attempt
         RETURNING jobs.id""",
        [job_id for job_id, _ in jobs], [attempt for _, attempt in jobs], worker, lease_seconds,
    )
    return {row["id"] for row in rows}


async def count_dropped(executor: Executor, service: str, counts: Mapping[str, int]) -> None:
    await executor.execute(
        """INSERT INTO dropped_deliveries (service, reason, count)
           SELECT $1, r.reason, r.count FROM unnest($2::text[], $3::bigint[]) AS r(reason, count)
           ON CONFLICT (service, reason) DO UPDATE SET count = dropped_deliveries.count + excluded.count""",
        service, list(counts), list(counts.values()),
    )


async def dropped_deliveries(executor: Executor) -> list[asyncpg.Record]:
    return await executor.fetch("SELECT service, reason, count FROM dropped_deliveries ORDER BY service, reason")


# An outcome counts only from the worker holding the job's live lease for that very attempt: a worker that
# was frozen, cut off or taken over writes nothing, whatever its handler returned.
# `row`: `locked` where the statement locks many rows first (see LOCKED), else `jobs`.
_HOLDS_LEASE = "{row}.state = 'processing' AND {row}.worker = {worker} AND {row}.attempt = {attempt} " \
               "AND {row}.lease_expires_at > now()"


async def mark_succeeded_many(
    executor: Executor, worker: str, outcomes: Sequence[tuple[uuid.UUID, int, Any]]
) -> set[uuid.UUID]:
    """Record (job, attempt, result) as `succeeded`, in one statement; the ids whose lease was still this worker's."""
    rows = await executor.fetch(
        f"WITH {LOCKED} {_succeeded_update(ids='$1', attempts='$2', results='$3', worker='$4')}",
        *_outcome_arrays(outcomes), worker,
    )
    return {row["id"] for row in rows}


def _succeeded_update(*, ids: str, attempts: str, results: str, worker: str) -> str:
    """mark_succeeded_many's UPDATE over `locked`, its parameters named by the caller."""
    return f"""UPDATE jobs SET state = 'succeeded', result = o.result::jsonb, finished_at = now(),
                           updated_at = now(), state_reason = NULL, lease_expires_at = NULL
             FROM locked JOIN unnest({ids}::uuid[], {attempts}::int[], {results}::text[]) AS o(id, attempt, result)
                  USING (id)
            WHERE jobs.id = locked.id
              AND {_HOLDS_LEASE.format(row="locked", worker=worker, attempt="o.attempt")}
        RETURNING jobs.id"""


def _outcome_arrays(
    outcomes: Sequence[tuple[uuid.UUID, int, Any]],
) -> tuple[list[uuid.UUID], list[int], list[str | None]]:
    return ([job_id for job_id, _, _ in outcomes], [attempt for _, attempt, _ in outcomes],
            [None if result is None else json.dumps(result) for _, _, result in outcomes])


async def claim_many_and_mark_succeeded(
    executor: Executor, worker: str, deliveries: Sequence[tuple[uuid.UUID, int]],
    outcomes: Sequence[tuple[uuid.UUID, int, Any]], *, lease_seconds: float,
) -> tuple[dict[uuid.UUID, asyncpg.Record], set[uuid.UUID]]:
    """claim_many and mark_succeeded_many in one statement and one commit: what a busy worker writes at once.

    The same answers as the two statements. A job must not be in both lists (Postgres applies only one of two
    updates of a row in one statement); its conditions would let only one of them match anyway: a claim takes a
    `processing` job only once its lease has expired, an outcome counts only under a live lease.
    """
    rows = await executor.fetch(
        f"""WITH {locked("$1::uuid[] || $5::uuid[]")},
                 claimed AS ({_claim_update(ids='$1', worker='$2', attempts='$3', lease_seconds='$4')}),
                 succeeded AS ({_succeeded_update(ids='$5', attempts='$6', results='$7', worker='$2')})
            -- one answer for both: a row of each claimed job (succeeded_id NULL), a row of each succeeded id
            SELECT succeeded.id AS succeeded_id, claimed.* FROM succeeded FULL JOIN claimed ON false""",
        [job_id for job_id, _ in deliveries], worker, [attempt for _, attempt in deliveries], lease_seconds,
        *_outcome_arrays(outcomes),
    )
    return ({row["id"]: row for row in rows if row["succeeded_id"] is None},
            {row["succeeded_id"] for row in rows if row["succeeded_id"] is not None})


async def mark_attempt_failed(
    executor: Executor, job_id: uuid.UUID, attempt: int, worker: str, *, state: JobState, reason: str,
    error: str, traceback: str | None, retry_in_seconds: float | None = None,
) -> bool:
    """Record a failed attempt as `retrying` (due back in `retry_in_seconds`) or `failed` (final)."""
    status = await executor.execute(
        f"""UPDATE jobs SET state = $3, state_reason = $4, last_error = $5, last_traceback = $6,
                           finished_at = CASE WHEN $3 = 'failed' THEN now() END, updated_at = now(),
                           retry_at = now() + make_interval(secs => $7), lease_expires_at = NULL
            WHERE jobs.id = $1 AND {_HOLDS_LEASE.format(row="jobs", worker="$2", attempt="$8")}""",
        job_id, worker, state.value, reason, error, traceback, retry_in_seconds, attempt,
    )
    return bool(status == "UPDATE 1")


def not_republished_since(moment: str) -> str:
    """SQL: no copy of the job published since `moment` (a column), or for `$1` seconds: the sweeper's guard
    against publishing the same lost job on every round."""
    return f"""(published_at IS NULL OR published_at < {moment}
                    OR published_at < now() - make_interval(secs => $1))"""


async def overdue_retries(
    connection: asyncpg.Connection, overdue_seconds: float, limit: int
) -> list[asyncpg.Record]:
    """`retrying` jobs whose delayed message should have come back long ago (and was not republished within
    `overdue_seconds`), locked for the caller. Their retry_at stays: a republished copy is never early."""
    return await connection.fetch(
        f"""SELECT {CLAIMED_COLUMNS} FROM jobs
             WHERE state = 'retrying' AND retry_at < now() - make_interval(secs => $1)
               AND {not_republished_since("retry_at")}
             ORDER BY retry_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED""",
        overdue_seconds, limit,
    )


async def release(
    executor: Executor, jobs: Sequence[tuple[uuid.UUID, int]], worker: str, reason: str
) -> list[asyncpg.Record]:
    """Give held jobs back as `enqueued` without counting the interrupted attempt (graceful shutdown).

    The rows released, for the caller to publish; published_at is cleared so the outbox relay does it otherwise.
    """
    return await executor.fetch(
        f"""WITH {LOCKED}
            UPDATE jobs SET state = 'enqueued', attempt = greatest(jobs.attempt - 1, 0), state_reason = $4,
                           worker = NULL, lease_expires_at = NULL, published_at = NULL, updated_at = now()
              FROM locked JOIN unnest($1::uuid[], $2::int[]) AS h(id, attempt) USING (id)
            WHERE jobs.id = locked.id
              AND locked.state = 'processing' AND locked.worker = $3 AND locked.attempt = h.attempt
        RETURNING {CLAIMED_RETURNING}""",
        [job_id for job_id, _ in jobs], [attempt for _, attempt in jobs], worker, reason,
    )


async def promote_due(connection: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Move due scheduled jobs to `enqueued`; concurrent schedulers skip each other's rows."""
    return await connection.fetch(
        f"""UPDATE jobs SET state = 'enqueued', state_reason = 'due', updated_at = now()
             WHERE id IN (SELECT id FROM jobs
                           WHERE state = 'scheduled' AND run_at <= now()
                           ORDER BY run_at
                           LIMIT $1
                           FOR UPDATE SKIP LOCKED)
               AND state = ANY($2::text[])
         RETURNING {CLAIMED_COLUMNS}""",
        limit, sources_of(JobState.ENQUEUED),
    )


async def seconds_to_next_due(executor: Executor) -> float | None:
    """Seconds until the earliest scheduled job is due, by Postgres' clock (the one promote_due compares run_at
    with; zero or less: due now); None when nothing is scheduled."""
    value = await executor.fetchval(
        "SELECT extract(epoch FROM min(run_at) - clock_timestamp()) FROM jobs WHERE state = 'scheduled'"
    )
    return None if value is None else float(value)


async def unpublished(
    connection: asyncpg.Connection, grace_seconds: float, limit: int, skip: Sequence[uuid.UUID] = ()
) -> list[asyncpg.Record]:
    """Committed jobs whose publish never confirmed, locked so replicas of the relay split them.

    `skip`: rows this round already found unroutable, so a full batch of them cannot hide the rows behind.
    """
    return await connection.fetch(
        f"""SELECT {CLAIMED_COLUMNS} FROM jobs
             WHERE state = 'enqueued' AND published_at IS NULL
               AND updated_at < now() - make_interval(secs => $1)
               AND NOT (id = ANY($3::uuid[]))
             ORDER BY updated_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED""",
        grace_seconds, limit, list(skip),
    )


async def stale_enqueued(connection: asyncpg.Connection, stale_seconds: float, limit: int) -> list[asyncpg.Record]:
    """`enqueued` jobs published longer ago than `stale_seconds` and still not taken: their message may be gone
    (a purged queue, a lost node). Locked for the caller, who publishes them again."""
    return await connection.fetch(
        f"""SELECT {CLAIMED_COLUMNS} FROM jobs
             WHERE state = 'enqueued' AND updated_at < now() - make_interval(secs => $1)
               AND published_at < now() - make_interval(secs => $1)
             ORDER BY updated_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED""",
        stale_seconds, limit,
    )


async def expired_leases(connection: asyncpg.Connection, stale_seconds: float, limit: int) -> list[asyncpg.Record]:
    """`processing` jobs whose lease expired (their worker died, froze or lost Postgres) and that no copy
    has been published for since, or for `stale_seconds`. Locked for the caller."""
    return await connection.fetch(
        f"""SELECT {CLAIMED_COLUMNS}, worker FROM jobs
             WHERE state = 'processing' AND coalesce(lease_expires_at, '-infinity') < now()
               AND {not_republished_since("lease_expires_at")}
             ORDER BY lease_expires_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED""",
        stale_seconds, limit,
    )


async def mark_republished(connection: asyncpg.Connection, job_ids: Sequence[uuid.UUID]) -> None:
    await connection.execute("UPDATE jobs SET published_at = now() WHERE id = ANY($1::uuid[])", list(job_ids))


async def fail_lease_expired(connection: asyncpg.Connection, job_ids: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
    """Jobs whose lease expired during their last attempt: `failed`, like any exhausted job."""
    return await connection.fetch(
        f"""UPDATE jobs
               SET state = 'failed', finished_at = now(), updated_at = now(), lease_expires_at = NULL,
                   state_reason = 'attempts exhausted: the lease of ' || coalesce(worker, 'unknown worker')
                                  || ' expired during the last attempt',
                   last_error = 'worker ' || coalesce(worker, 'unknown') || ' stopped renewing its lease'
             WHERE id = ANY($1::uuid[]) AND state = 'processing' AND lease_expires_at < now()
         RETURNING {CLAIMED_COLUMNS}""",
        list(job_ids),
    )


async def insert_logs(executor: Executor, rows: Sequence[tuple[uuid.UUID, str, str, datetime]]) -> None:
    # Skip lines of jobs deleted meanwhile rather than failing the whole batch on the foreign key.
    await executor.execute(
        """INSERT INTO job_logs (job_id, level, message, created_at)
           SELECT l.job_id, l.level, l.message, l.created_at
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
                  AS l(job_id, level, message, created_at)
            WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.id = l.job_id)""",
        [row[0] for row in rows], [row[1] for row in rows], [row[2] for row in rows],
        [row[3] for row in rows],
    )


async def continuation_start(executor: Executor, parent_id: uuid.UUID, on: str) -> tuple[JobState | None, str]:
    """How a continuation of `parent_id` starts: `awaiting`, or (None: due now | `skipped`) when the parent has
    finished already, with the reason. The parent row is share-locked until the caller commits, so it cannot
    finish between this look and the continuation's insert (its trigger would miss the continuation)."""
    state: str | None = await executor.fetchval("SELECT state FROM jobs WHERE id = $1 FOR SHARE", parent_id)
    if state is None:
        raise LookupError(f"no job {parent_id} to continue")
    if JobState(state) not in FINAL_STATES:
        return JobState.AWAITING, f"waiting for job {parent_id} to {'succeed' if on == 'succeeded' else 'finish'}"
    if on == "finished" or state == JobState.SUCCEEDED:
        return None, f"parent {parent_id} {state}"
    return JobState.SKIPPED, f"skipped: parent {parent_id} {state}, and this job runs only after success"


async def create_batch(executor: Executor, batch_id: uuid.UUID, total: int | None) -> bool:
    """A new batch (total None: open until sealed); False when it exists already (a producer's retry)."""
    status = await executor.execute(
        "INSERT INTO batches (id, total) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", batch_id, total)
    return bool(status == "INSERT 0 1")


async def seal_batch(executor: Executor, batch_id: uuid.UUID) -> asyncpg.Record | None:
    """Close an open batch at the number of jobs it holds; its callback is due at once if they all finished."""
    return await executor.fetchrow("SELECT * FROM seal_batch($1)", batch_id)


async def set_batch_callback(executor: Executor, batch_id: uuid.UUID, callback_id: uuid.UUID) -> None:
    await executor.execute("UPDATE batches SET callback_id = $2 WHERE id = $1", batch_id, callback_id)


async def batch_of_callback(executor: Executor, callback_id: uuid.UUID) -> asyncpg.Record | None:
    return await executor.fetchrow(
        "SELECT b.* FROM batches b JOIN jobs j ON j.after_batch_id = b.id WHERE j.id = $1", callback_id)


async def get_batch(executor: Executor, batch_id: uuid.UUID) -> asyncpg.Record | None:
    return await executor.fetchrow("SELECT * FROM batches WHERE id = $1", batch_id)
