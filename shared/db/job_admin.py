"""The operator's side of the jobs table (the API, the dashboard, the CLI): find jobs (filter, search, keyset
pages), count them, chart them, their children and emails; and act on them: requeue, enqueue now, delete,
cancel.

The path of a job through the system (insert, claim, lease, outcome, sweep) is shared.db.jobs; this module
only reads jobs, or moves them on an operator's word (and the API's: a moved or cancelled event deletes its
pending jobs). Every search here is shaped for an index of 0003_search.sql or 0001_jobs.sql;
tests/integration/test_search_plan.py holds the plans to that on a large table.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shared.db import reports
from shared.db.cursor import Cursor
from shared.db.cursor import InvalidCursor as InvalidCursor  # search_jobs raises it: re-exported for its callers
from shared.db.jobs import LOCKED
from shared.db.pool import Executor
from shared.jobs import CANCELLABLE, DELETABLE, REQUEUEABLE, JobState

# Columns of a list row: everything but the potentially large traceback and result.
LIST_COLUMNS = """id, kind, args, queue, service, priority, state, state_reason, attempt, max_attempts, run_at,
    idempotency_key, recurring_id, fire_time, parent_id, worker, started_at, finished_at, published_at,
    last_error, NULL::text AS last_traceback, NULL::jsonb AS result, created_at, updated_at, cancelled_by,
    limit_wait, progress_done, progress_total, progress_message, progress_at, after_id, after_on, batch_id,
    after_batch_id"""

MAX_PAGE = 500


@dataclass(frozen=True)
class JobFilter:
    """What an operator narrows the job list by; every field optional, all of them AND-ed."""

    state: JobState | None = None
    queue: str | None = None
    kind: str | None = None
    q: str | None = None  # substring of arguments (recipient, event id...) or error text, case-insensitive
    since: datetime | None = None  # updated_at >= since
    until: datetime | None = None  # updated_at < until
    redacted: bool = False  # a read-only caller: match only what it is shown (secrets redacted)

    def where(self, params: list[Any]) -> str:
        """SQL conditions for this filter, appending their values to `params`."""
        conditions = ["TRUE"]

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if self.state is not None:
            conditions.append(f"state = {param(self.state.value)}")
        if self.queue:
            conditions.append(f"queue = {param(self.queue)}")
        if self.kind:
            conditions.append(f"kind = {param(self.kind)}")
        if self.since is not None:
            conditions.append(f"updated_at >= {param(self.since)}")
        if self.until is not None:
            conditions.append(f"updated_at < {param(self.until)}")
        needle = (self.q or "").strip()
        if needle:
            # Same expression as jobs_search_trgm_idx; a pasted job id also finds the job itself.
            pattern = param(like_pattern(needle))
            matched = f"jobs_search_text(args, last_error) ILIKE {pattern}"
            if self.redacted:
                # The index finds the candidates; the redacted text (0006) decides, so a piece of a
                # secret finds nothing that the caller would only see as [redacted].
                matched += f" AND jobs_redacted_search_text(args, last_error) ILIKE {pattern}"
            as_id = _as_uuid(needle)
            if as_id is not None:
                matched = f"({matched} OR id = {param(as_id)})"
            conditions.append(matched)
        return " AND ".join(conditions)


@dataclass(frozen=True)
class JobPage:
    rows: list[asyncpg.Record]
    next_cursor: str | None  # None on the last page


def like_pattern(needle: str) -> str:
    """`needle` as a literal substring pattern for ILIKE (its %, _ and backslashes escaped)."""
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def search_sql(
    job_filter: JobFilter, cursor: Cursor | None, limit: int, *, soonest_first: bool = False
) -> tuple[str, list[Any]]:
    """The page query and its parameters (separate so the plan test EXPLAINs exactly what runs).

    `soonest_first` orders by run_at, earliest first (the dashboard's Scheduled list: what runs next);
    its cursor holds the last row's run_at instead of its updated_at.
    """
    params: list[Any] = []
    where = job_filter.where(params)
    if soonest_first:
        if cursor is not None:
            params.extend([cursor.at, cursor.id])
            where += f" AND (run_at, id) > (${len(params) - 1}, ${len(params)})"
        params.append(limit)
        return f"SELECT {LIST_COLUMNS} FROM jobs WHERE {where} ORDER BY run_at, id LIMIT ${len(params)}", params
    if cursor is not None:
        params.extend([cursor.at, cursor.id])
        where += f" AND (updated_at, id) < (${len(params) - 1}, ${len(params)})"
    params.append(limit)
    sql = f"SELECT {LIST_COLUMNS} FROM jobs WHERE {where} ORDER BY updated_at DESC, id DESC LIMIT ${len(params)}"
    return sql, params


async def search_jobs(
    executor: Executor, job_filter: JobFilter, *, limit: int = 50, cursor: str | None = None,
    soonest_first: bool = False,
) -> JobPage:
    """One page of jobs matching `job_filter`, newest change first (or soonest run_at first);
    raises InvalidCursor for a foreign cursor."""
    limit = max(1, min(limit, MAX_PAGE))
    after = Cursor.decode(cursor) if cursor else None
    sql, params = search_sql(job_filter, after, limit + 1, soonest_first=soonest_first)
    rows = await executor.fetch(sql, *params)
    more = len(rows) > limit
    rows = rows[:limit]
    at = "run_at" if soonest_first else "updated_at"
    next_cursor = Cursor(rows[-1][at], rows[-1]["id"]).encode() if more and rows else None
    return JobPage(rows, next_cursor)


async def matching_ids(executor: Executor, job_filter: JobFilter, limit: int) -> list[uuid.UUID]:
    """Ids of up to `limit` jobs matching `job_filter` (for bulk actions), newest change first."""
    params: list[Any] = []
    where = job_filter.where(params)
    params.append(limit)
    rows = await executor.fetch(
        f"SELECT id FROM jobs WHERE {where} ORDER BY updated_at DESC, id DESC LIMIT ${len(params)}", *params
    )
    return [row["id"] for row in rows]


def counts_sql() -> str:
    # One index-only count per state (jobs_state_idx) instead of a GROUP BY over the table.
    return """SELECT s.state, (SELECT count(*) FROM jobs WHERE jobs.state = s.state) AS n
                FROM unnest($1::text[]) AS s(state)"""


async def counts_by_state(executor: Executor) -> dict[JobState, int]:
    """How many jobs are in each state, every state present (zero when none)."""
    rows = await executor.fetch(counts_sql(), [state.value for state in JobState])
    return {JobState(row["state"]): int(row["n"]) for row in rows}


@dataclass(frozen=True)
class SeriesPoint:
    at: datetime  # start of the bucket
    succeeded: int
    failed: int


async def _series(executor: Executor, unit: str, buckets: int) -> list[SeriesPoint]:
    # Outcomes come from the history (job_states_created_idx), so a job that failed twice counts twice.
    rows = await executor.fetch(
        f"""WITH bounds AS (SELECT date_trunc('{unit}', now()) AS last),
                 slots AS (SELECT generate_series(last - ($1 - 1) * interval '1 {unit}', last,
                                                  interval '1 {unit}') AS at FROM bounds),
                 outcomes AS (
                     SELECT date_trunc('{unit}', created_at) AS at,
                            count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
                            count(*) FILTER (WHERE state = 'failed') AS failed
                       FROM job_states, bounds
                      WHERE created_at >= last - ($1 - 1) * interval '1 {unit}'
                        AND state IN ('succeeded', 'failed')
                      GROUP BY 1)
            SELECT slots.at, coalesce(succeeded, 0) AS succeeded, coalesce(failed, 0) AS failed
              FROM slots LEFT JOIN outcomes USING (at)
             ORDER BY slots.at""",
        buckets,
    )
    return [SeriesPoint(row["at"], int(row["succeeded"]), int(row["failed"])) for row in rows]


async def per_second(executor: Executor, seconds: int = 60) -> list[SeriesPoint]:
    """Succeeded/failed outcomes per second over the last `seconds` seconds (current second last)."""
    return await _series(executor, "second", seconds)


async def per_hour(executor: Executor, hours: int = 24) -> list[SeriesPoint]:
    """Succeeded/failed outcomes per hour over the last `hours` hours (24 for a day, 168 for a week)."""
    return await _series(executor, "hour", hours)


@dataclass(frozen=True)
class Lateness:
    kind: str
    jobs: int
    p50_seconds: float
    p99_seconds: float


async def lateness_by_kind(executor: Executor, window: timedelta = timedelta(hours=24)) -> list[Lateness]:
    """reports.lateness_by_kind over the last `window`: the dashboard shows what the daily report counts."""
    end = datetime.now(UTC)
    rows = await reports.lateness_by_kind(executor, end - window, end)
    return [Lateness(row["kind"], int(row["count"]), float(row["p50_seconds"]), float(row["p99_seconds"]))
            for row in rows]


async def children(executor: Executor, parent_id: uuid.UUID, *, limit: int = 100) -> list[asyncpg.Record]:
    """Jobs this job enqueued (a reminder's fan-out), oldest first, at most `limit`."""
    return await executor.fetch(
        f"SELECT {LIST_COLUMNS} FROM jobs WHERE parent_id = $1 ORDER BY created_at, id LIMIT $2",
        parent_id, limit,
    )


async def children_counts(executor: Executor, parent_id: uuid.UUID) -> dict[JobState, int]:
    """How many of this job's children are in each state (only states that occur)."""
    rows = await executor.fetch(
        "SELECT state, count(*) AS n FROM jobs WHERE parent_id = $1 GROUP BY state", parent_id
    )
    return {JobState(row["state"]): int(row["n"]) for row in rows}


async def job_emails(executor: Executor, job_id: uuid.UUID) -> list[asyncpg.Record]:
    """The audit rows of the emails this job sent or tried to send (Message-ID, status, SMTP reply)."""
    return await executor.fetch("SELECT * FROM emails WHERE job_id = $1 ORDER BY created_at, id", job_id)


# The operator's actions (API, dashboard, CLI): each moves only the jobs whose state allows it (shared.jobs)
# and answers with the rows it moved.
async def job_state(executor: Executor, job_id: uuid.UUID) -> str | None:
    """The state of one job, None when there is none: what an action that moved nothing answers with."""
    state: str | None = await executor.fetchval("SELECT state FROM jobs WHERE id = $1", job_id)
    return state


# Operator requeue, of one job or many: back to `enqueued` with a fresh attempt budget.
REQUEUE = f"""WITH {LOCKED}
             UPDATE jobs SET state = 'enqueued', attempt = 0, state_reason = $2, worker = NULL, cancelled_by = NULL,
                              published_at = NULL, run_at = least(jobs.run_at, now()), finished_at = NULL,
                              updated_at = now()
               FROM locked WHERE jobs.id = locked.id AND locked.state = ANY($3::text[])
           RETURNING jobs.*"""
REQUEUEABLE_STATES = sorted(state.value for state in REQUEUEABLE)


async def requeue(executor: Executor, job_id: uuid.UUID, reason: str) -> asyncpg.Record | None:
    """Operator requeue (see REQUEUE); None if not requeueable."""
    return await executor.fetchrow(REQUEUE, [job_id], reason, REQUEUEABLE_STATES)


async def requeue_jobs(executor: Executor, job_ids: Sequence[uuid.UUID], reason: str) -> list[asyncpg.Record]:
    """Bulk operator requeue, the statement of `requeue`; the rows moved."""
    return await executor.fetch(REQUEUE, list(job_ids), reason, REQUEUEABLE_STATES)


async def enqueue_scheduled_now(executor: Executor, job_id: uuid.UUID, reason: str) -> asyncpg.Record | None:
    """A `scheduled` job moved to `enqueued` now, keeping its attempts; None if it is not scheduled."""
    return await executor.fetchrow(
        """UPDATE jobs SET state = 'enqueued', state_reason = $2, run_at = now(), published_at = NULL,
                           updated_at = now()
            WHERE id = $1 AND state = 'scheduled'
        RETURNING *""",
        job_id, reason,
    )


async def enqueue_scheduled_now_many(
    executor: Executor, job_ids: Sequence[uuid.UUID], reason: str
) -> list[asyncpg.Record]:
    """The bulk form of enqueue_scheduled_now: the rows moved (those no longer scheduled are left)."""
    return await executor.fetch(
        """UPDATE jobs SET state = 'enqueued', state_reason = $2, run_at = now(), published_at = NULL,
                           updated_at = now()
            WHERE id = ANY($1::uuid[]) AND state = 'scheduled'
        RETURNING *""",
        list(job_ids), reason,
    )


async def delete(executor: Executor, job_ids: Sequence[uuid.UUID], reason: str) -> list[asyncpg.Record]:
    return await executor.fetch(
        f"""WITH {LOCKED}
            UPDATE jobs SET state = 'deleted', state_reason = $2, finished_at = now(), updated_at = now()
              FROM locked WHERE jobs.id = locked.id AND locked.state = ANY($3::text[])
        RETURNING jobs.id""",
        list(job_ids), reason, sorted(state.value for state in DELETABLE),
    )


CANCELLABLE_STATES = sorted(state.value for state in CANCELLABLE)


async def cancel(
    executor: Executor, job_ids: Sequence[uuid.UUID], cancelled_by: str, reason: str
) -> list[asyncpg.Record]:
    """Move jobs to `cancelled`; the ids of the rows moved.

    A running job's lease ends here with its state: the holder's next renewal misses it and cancels the
    handler, and any outcome it still writes is refused (outcomes need `processing` and the lease).
    """
    return await executor.fetch(
        f"""WITH {LOCKED}
            UPDATE jobs SET state = 'cancelled', state_reason = $3, cancelled_by = $2, finished_at = now(),
                           updated_at = now(), lease_expires_at = NULL
              FROM locked WHERE jobs.id = locked.id AND locked.state = ANY($4::text[])
        RETURNING jobs.id""",
        list(job_ids), cancelled_by, reason, CANCELLABLE_STATES,
    )
