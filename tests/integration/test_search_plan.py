"""The operator queries stay on indexes with a large history: search, counts by state, state list pages.

200,000 job rows (a million takes over a minute to load on a 2-core machine; the plans are the same
shape, the trigram index only grows). Rows are inserted with the history trigger off, as a bulk
import would be; the search index is the migration's own, maintained row by row during the load.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared.db import job_admin
from shared.db.cursor import Cursor
from shared.db.pool import open_pool
from shared.jobs import JobState
from tests.support.environment import TestEnvironment

ROWS = 200_000

pytestmark = pytest.mark.timeout(240)

# 80% email.send (recipient, event id, subject), 10% reminders, 10% welcomes; 90% succeeded, 5% failed
# with an SMTP error, the rest deleted, scheduled or enqueued; one change every 2 seconds going back.
LOAD = """
INSERT INTO jobs (id, kind, args, queue, service, priority, state, attempt, max_attempts, run_at,
                  last_error, created_at, updated_at)
SELECT gen_random_uuid(),
       CASE WHEN i % 10 < 8 THEN 'email.send' WHEN i % 10 = 8 THEN 'event.reminder' ELSE 'email.welcome' END,
       CASE WHEN i % 10 < 8 THEN jsonb_build_object('to', 'user' || i || '@example.org',
                                                   'subject', 'Reminder: event ' || (i % 5000),
                                                   'event_id', md5((i % 5000)::text)::uuid)
            WHEN i % 10 = 8 THEN jsonb_build_object('event_id', md5((i % 5000)::text)::uuid)
            ELSE jsonb_build_object('email', 'person' || i || '@example.com', 'name', 'Person ' || i) END,
       'default', 'email', 5,
       CASE WHEN i % 100 < 90 THEN 'succeeded' WHEN i % 100 < 95 THEN 'failed' WHEN i % 100 < 98 THEN 'deleted'
            WHEN i % 100 = 98 THEN 'scheduled' ELSE 'enqueued' END,
       1, 3, now() - i * interval '2 seconds',
       CASE WHEN i % 100 BETWEEN 90 AND 94 THEN 'SMTPRecipientsRefused: 550 mailbox ' || i || ' unavailable' END,
       now() - i * interval '2 seconds', now() - i * interval '2 seconds'
  FROM generate_series(1, $1::int) AS i
"""


@pytest.fixture
async def big_pool(env: TestEnvironment) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(env.database_url, max_size=2) as pool:
        async with pool.acquire() as connection:
            await connection.execute("SET session_replication_role = replica")  # no history rows for the import
            await connection.execute(LOAD, ROWS)
            await connection.execute("RESET session_replication_role")
            await connection.execute("VACUUM ANALYZE jobs")
        yield pool


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


async def explain(pool: asyncpg.Pool, sql: str, *params: Any) -> list[dict[str, Any]]:
    document = await pool.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params)
    return nodes(document[0]["Plan"])


def uses(plan: list[dict[str, Any]], node_type: str, index: str) -> bool:
    return any(node["Node Type"] == node_type and node.get("Index Name") == index for node in plan)


def describe(plan: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(node["Node Type"], node.get("Index Name") or node.get("Relation Name")) for node in plan]


async def test_search_counts_and_state_pages_use_indexes(big_pool: asyncpg.Pool) -> None:
    # Search by recipient, by event id, by error text (with a state): trigram index, never a table scan.
    for job_filter in (
        job_admin.JobFilter(q="user123457@example"),
        job_admin.JobFilter(q=f"{await big_pool.fetchval('SELECT md5($1)::uuid::text', '4321')}"),
        job_admin.JobFilter(state=JobState.FAILED, q="550 mailbox 12391 "),
    ):
        sql, params = job_admin.search_sql(job_filter, None, 51)
        plan = await explain(big_pool, sql, *params)
        assert uses(plan, "Bitmap Index Scan", "jobs_search_trgm_idx"), (job_filter, describe(plan))
        assert not any(node["Node Type"] == "Seq Scan" for node in plan), describe(plan)

    # And the rows it finds are the right ones.
    page = await job_admin.search_jobs(big_pool, job_admin.JobFilter(q="USER123457@example.org"))
    assert [row["args"]["to"] for row in page.rows] == ["user123457@example.org"]
    page = await job_admin.search_jobs(big_pool, job_admin.JobFilter(state=JobState.FAILED, q="mailbox 12391 "))
    assert [row["last_error"] for row in page.rows] == ["SMTPRecipientsRefused: 550 mailbox 12391 unavailable"]
    event = await big_pool.fetchval("SELECT md5($1)::uuid::text", "4328")
    page = await job_admin.search_jobs(big_pool, job_admin.JobFilter(kind="event.reminder", q=event), limit=500)
    assert len(page.rows) == ROWS // 5000  # event 4328's rows are all reminders, one every 5,000 rows

    # Counts by state: one index-only walk per state, no table scan.
    plan = await explain(big_pool, job_admin.counts_sql(), [state.value for state in JobState])
    assert uses(plan, "Index Only Scan", "jobs_state_idx"), describe(plan)
    assert not any(node["Node Type"] == "Seq Scan" for node in plan), describe(plan)
    counts = await job_admin.counts_by_state(big_pool)
    assert counts[JobState.SUCCEEDED] == ROWS * 90 // 100 and counts[JobState.FAILED] == ROWS * 5 // 100

    # A state's list, first page and a later one, and the unfiltered list: read in index order, no sort.
    first = await job_admin.search_jobs(big_pool, job_admin.JobFilter(state=JobState.FAILED), limit=50)
    assert first.next_cursor is not None
    for job_filter, cursor, index in (
        (job_admin.JobFilter(state=JobState.FAILED), None, "jobs_state_updated_idx"),
        (job_admin.JobFilter(state=JobState.FAILED), Cursor.decode(first.next_cursor),
         "jobs_state_updated_idx"),
        (job_admin.JobFilter(), None, "jobs_updated_idx"),
    ):
        sql, params = job_admin.search_sql(job_filter, cursor, 51)
        plan = await explain(big_pool, sql, *params)
        assert uses(plan, "Index Scan", index) or uses(plan, "Index Only Scan", index), describe(plan)
        assert not any(node["Node Type"] in {"Seq Scan", "Sort"} for node in plan), describe(plan)
    second = await job_admin.search_jobs(big_pool, job_admin.JobFilter(state=JobState.FAILED), limit=50,
                                          cursor=first.next_cursor)
    assert {row["id"] for row in first.rows}.isdisjoint(row["id"] for row in second.rows)
    assert first.rows[-1]["updated_at"] > second.rows[0]["updated_at"]
