"""The maintenance worker against real Postgres and RabbitMQ (and the email worker and a sink for the report)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from services.email_worker.handlers import build_handlers as email_handlers
from services.maintenance_worker.handlers import build_handlers as maintenance_handlers
from shared.db import jobs as job_queries
from shared.jobs import JobState
from shared.kinds import EMAIL_SERVICE, MAINTENANCE_SERVICE, PLATFORM_KINDS
from shared.runtime import Runtime, open_runtime
from tests.conftest import StartWorker
from tests.support.domain_rows import insert_event, insert_participants
from tests.support.environment import TestEnvironment
from tests.support.kinds import TEST_SERVICE, test_registry
from tests.support.smtp import SmtpSink
from tests.support.waiting import eventually

ADMINS = ["ops@example.com", "boss@example.com"]
TIMEZONE = "America/New_York"


@pytest.fixture
def overrides(sink: SmtpSink) -> dict[str, Any]:
    return {"smtp_port": sink.port, "admin_emails": ADMINS, "scheduler_timezone": TIMEZONE,
            "event_archive_days": 30, "log_retention_days": 90, "job_retention_days": 7}


@pytest.fixture
async def platform(env: TestEnvironment, overrides: dict[str, Any]) -> AsyncIterator[Runtime]:
    # The test kinds too: the reaper test needs a worker that can finish a requeued job.
    async with open_runtime(env.settings(**overrides), test_registry(*PLATFORM_KINDS)) as runtime:
        yield runtime


@pytest.fixture
async def maintenance_worker(env: TestEnvironment, start_worker: StartWorker, overrides: dict[str, Any]) -> None:
    await start_worker(registry=test_registry(*PLATFORM_KINDS), service=MAINTENANCE_SERVICE, concurrency=2,
                       handlers=maintenance_handlers(env.settings(**overrides)), **overrides)


async def run_job(runtime: Runtime, kind: str, **options: Any) -> asyncpg.Record:
    job = await runtime.client.enqueue(kind, {}, **options)
    assert job is not None

    async def final() -> asyncpg.Record | None:
        row = await job_queries.get_job(runtime.pool, job.id)
        return row if row is not None and row["state"] in ("succeeded", "failed") else None

    row = await eventually(final, timeout=60, what=f"{kind} to finish")
    assert row["state"] == "succeeded", row["last_error"]
    return row


async def insert_job_row(
    pool: asyncpg.Pool, *, kind: str = "test.noop", state: str = "succeeded", updated_at: datetime | None = None,
    run_at: datetime | None = None, worker: str | None = None, attempt: int = 0, max_attempts: int = 3,
) -> uuid.UUID:
    """A job row that no message points at, put in `state` directly (its history row comes from the trigger)."""
    service = TEST_SERVICE if kind.startswith("test.") else EMAIL_SERVICE
    row = await job_queries.insert_job(pool, job_queries.NewJob(
        id=uuid.uuid4(), kind=kind, args={}, queue="default", service=service, priority=5,
        state=JobState(state), max_attempts=max_attempts, run_at=run_at or datetime.now(UTC),
    ))
    assert row is not None
    await pool.execute(
        """UPDATE jobs SET worker = $2, attempt = $3, updated_at = coalesce($4, now()),
                           started_at = CASE WHEN state = 'processing' THEN now() END
            WHERE id = $1""",
        row["id"], worker, attempt, updated_at,
    )
    return row["id"]


@pytest.mark.usefixtures("maintenance_worker")
async def test_cleanup_expired_events_archives_exactly_the_events_ended_long_enough_ago(platform: Runtime) -> None:
    now = datetime.now(UTC)
    pool = platform.pool
    ended_31_days_ago = await insert_event(pool, starts_at=now - timedelta(days=31, hours=2),
                                           ends_at=now - timedelta(days=31))
    started_40_days_ago = await insert_event(pool, starts_at=now - timedelta(days=40))
    cancelled_long_ago = await insert_event(pool, starts_at=now - timedelta(days=45), cancelled_at=now)
    ended_29_days_ago = await insert_event(pool, starts_at=now - timedelta(days=35), ends_at=now - timedelta(days=29))
    upcoming = await insert_event(pool, starts_at=now + timedelta(days=3))
    archived_before = now - timedelta(days=20)
    already_archived = await insert_event(pool, starts_at=now - timedelta(days=60), archived_at=archived_before)

    row = await run_job(platform, "maintenance.cleanup_expired_events")

    assert row["result"] == {"archived": 3}
    archived = {r["id"]: r["archived_at"] for r in await pool.fetch("SELECT id, archived_at FROM events")}
    assert {event for event, at in archived.items() if at is not None and at > archived_before} == {
        ended_31_days_ago, started_40_days_ago, cancelled_long_ago}
    assert archived[already_archived] == archived_before
    assert archived[ended_29_days_ago] is None and archived[upcoming] is None


@pytest.mark.usefixtures("maintenance_worker")
async def test_cleanup_old_logs_deletes_old_logs_and_old_finished_jobs_but_keeps_failed_ones(
    platform: Runtime,
) -> None:
    now = datetime.now(UTC)
    pool = platform.pool
    old_succeeded = await insert_job_row(pool, state="succeeded", updated_at=now - timedelta(days=8))
    old_deleted = await insert_job_row(pool, state="deleted", updated_at=now - timedelta(days=8))
    old_failed = await insert_job_row(pool, state="failed", updated_at=now - timedelta(days=100))
    recent_succeeded = await insert_job_row(pool, state="succeeded", updated_at=now - timedelta(days=6))
    await pool.executemany(
        "INSERT INTO job_logs (job_id, level, message, created_at) VALUES ($1, 'info', $2, $3)",
        [(old_succeeded, "old succeeded", now - timedelta(days=8)),
         (old_failed, "older than 90 days", now - timedelta(days=91)),
         (old_failed, "89 days old", now - timedelta(days=89)),
         (recent_succeeded, "recent", now - timedelta(days=1))],
    )
    await pool.execute(
        """INSERT INTO emails (id, job_id, idempotency_key, recipient, subject, template, message_id, status)
           VALUES ($1, $2, 'k', 'a@example.com', 's', 'plain', '<m@eventjobs>', 'sent')""",
        uuid.uuid4(), old_succeeded,
    )

    row = await run_job(platform, "maintenance.cleanup_old_logs")

    assert row["result"] == {"log_lines_deleted": 1, "jobs_deleted": 2}
    # Its progress: the last report of the second phase, stored when the handler ended.
    assert (row["progress_done"], row["progress_total"]) == (2, None)
    assert row["progress_message"] == "step 2 of 2: finished jobs deleted (1 log lines before)"
    remaining = {r["id"] for r in await pool.fetch("SELECT id FROM jobs WHERE kind = 'test.noop'")}
    assert remaining == {old_failed, recent_succeeded}
    assert await pool.fetchval(
        "SELECT count(*) FROM job_states WHERE job_id = ANY($1::uuid[])", [old_succeeded, old_deleted]) == 0
    assert await pool.fetchval("SELECT count(*) FROM job_states WHERE job_id = $1", old_failed) >= 1
    kept_logs = await pool.fetch(
        "SELECT message FROM job_logs WHERE job_id = ANY($1::uuid[]) ORDER BY message",
        [old_succeeded, old_failed, recent_succeeded],
    )
    assert [r["message"] for r in kept_logs] == ["89 days old", "recent"]
    # The audit of what was mailed outlives the job that sent it.
    assert await pool.fetchval("SELECT job_id IS NULL FROM emails WHERE idempotency_key = 'k'") is True


async def seed_job(
    pool: asyncpg.Pool, kind: str, run_at: datetime, starts: list[datetime], outcome: str, finished: datetime
) -> None:
    """A finished job with a hand-written history: `processing` at each of `starts`, then `outcome`."""
    job_id = await insert_job_row(pool, kind=kind, state=outcome, run_at=run_at)
    await pool.execute("DELETE FROM job_states WHERE job_id = $1", job_id)
    history = [("enqueued", run_at), *(("processing", start) for start in starts), (outcome, finished)]
    await pool.executemany(
        "INSERT INTO job_states (job_id, state, attempt, created_at) VALUES ($1, $2, 1, $3)",
        [(job_id, state, at) for state, at in history],
    )


async def seed_email(pool: asyncpg.Pool, status: str, at: datetime) -> None:
    await pool.execute(
        """INSERT INTO emails (id, idempotency_key, recipient, subject, template, message_id, status, sent_at,
                               updated_at)
           VALUES ($1, $2, 'x@example.com', 's', 'plain', '<x@eventjobs>', $3, $4, $5)""",
        uuid.uuid4(), uuid.uuid4().hex, status, at if status == "sent" else None, at,
    )


@pytest.mark.usefixtures("maintenance_worker")
async def test_daily_report_covers_yesterday_in_the_scheduler_time_zone_and_mails_the_admins(
    env: TestEnvironment, start_worker: StartWorker, platform: Runtime, sink: SmtpSink, overrides: dict[str, Any],
) -> None:
    await start_worker(registry=test_registry(*PLATFORM_KINDS), handlers=email_handlers(env.settings(**overrides)),
                       service=EMAIL_SERVICE, **overrides)
    pool = platform.pool
    # The job is meant to run at a fixed past instant, so "yesterday" does not move while the test runs.
    fire = datetime.now(UTC) - timedelta(days=2)
    zone = ZoneInfo(TIMEZONE)
    day: date = fire.astimezone(zone).date() - timedelta(days=1)
    start = datetime.combine(day, time(), zone)
    end = datetime.combine(day + timedelta(days=1), time(), zone)
    minute, second = timedelta(minutes=1), timedelta(seconds=1)

    for created in (start, end - minute, start - minute, end):  # the first two fall on the day
        await insert_event(pool, starts_at=end + timedelta(days=10), created_at=created)
    event_id = await insert_event(pool, starts_at=end + timedelta(days=10), created_at=start - timedelta(days=3))
    await insert_participants(pool, event_id, 3, created_at=start + timedelta(hours=5))
    await insert_participants(pool, event_id, 1, domain="late.example.com", created_at=end + minute)
    for status, at in [*[("sent", start + timedelta(hours=h)) for h in range(4)], ("sent", end + second),
                       ("failed", start + minute), ("failed", end - second), ("queued", start + minute)]:
        await seed_email(pool, status, at)
    # email.send: lateness 1..100 s (p50 50.5 s, p99 99.01 s), 97 succeeded and 3 failed on the day.
    for lateness in range(1, 101):
        run_at = start + timedelta(hours=1)
        await seed_job(pool, "email.send", run_at, [run_at + lateness * second],
                       "succeeded" if lateness <= 97 else "failed", run_at + timedelta(minutes=3))
    # First started the day before: counts as succeeded, not in the day's lateness.
    await seed_job(pool, "email.send", start - minute, [start - 30 * second, start + minute], "succeeded",
                   start + 2 * minute)
    await seed_job(pool, "event.reminder", start + timedelta(hours=2),
                   [start + timedelta(hours=2, milliseconds=500)], "succeeded", start + timedelta(hours=3))
    await seed_job(pool, "event.reminder", end + minute, [end + 2 * minute], "succeeded", end + 3 * minute)

    job = await run_job(platform, "maintenance.daily_report", run_at=fire)

    expected = {
        "day": day.isoformat(), "timezone": TIMEZONE,
        "from": start.astimezone(UTC).isoformat(), "to": end.astimezone(UTC).isoformat(),
        "events_created": 2, "participants_registered": 3, "emails": {"sent": 4, "failed": 2},
        "jobs": [{"kind": "email.send", "succeeded": 98, "failed": 3},
                 {"kind": "event.reminder", "succeeded": 1, "failed": 0}],
        "lateness": [{"kind": "email.send", "count": 100, "p50_seconds": 50.5, "p99_seconds": 99.01},
                     {"kind": "event.reminder", "count": 1, "p50_seconds": 0.5, "p99_seconds": 0.5}],
    }
    assert job["result"] == {"day": day.isoformat(), "mailed_to": ADMINS}
    report = await pool.fetchrow("SELECT * FROM reports WHERE day = $1", day)
    assert report is not None
    assert (report["content"], report["job_id"]) == (expected, job["id"])

    for admin in ADMINS:
        [received] = await sink.wait_for(1, recipient=admin)
        assert received.subject == f"eventjobs daily report for {day.isoformat()}"
        text, html = received.body("plain"), received.body("html")
        assert "Events created:          2" in text
        assert "email.send: 98 / 3" in text
        assert "email.send: 50.500 / 99.010 (100)" in text
        assert "<td>email.send</td><td>98</td><td>3</td>" in html
    mails = await pool.fetch("SELECT status, parent_id FROM emails e JOIN jobs j ON j.id = e.job_id")
    assert [(row["status"], row["parent_id"]) for row in mails] == [("sent", job["id"])] * 2


@pytest.mark.usefixtures("maintenance_worker")
async def test_reaper_removes_dead_servers_and_leaves_their_jobs_to_the_lease_sweeper(platform: Runtime) -> None:
    pool = platform.pool
    dead = "test:gone-host:4242:dead00"
    await pool.execute(
        """INSERT INTO servers (id, service, host, pid, last_heartbeat)
           VALUES ($1, 'test', 'gone-host', 4242, now() - interval '1 hour')""",
        dead,
    )
    # A job whose holder looks dead from here but whose lease is live: only the lease decides who may run it.
    held = await insert_job_row(pool, state="processing", worker=dead, attempt=1)
    await pool.execute("UPDATE jobs SET lease_expires_at = now() + interval '1 hour' WHERE id = $1", held)

    reaper = await run_job(platform, "maintenance.reap_dead_servers")
    assert reaper["result"] == {"servers_removed": [dead]}
    untouched = await job_queries.get_job(pool, held)
    assert untouched is not None and (untouched["state"], untouched["worker"]) == ("processing", dead)
    assert await pool.fetchval("SELECT count(*) FROM servers WHERE id = $1", dead) == 0
