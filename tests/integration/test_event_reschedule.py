"""A moved event keeps its reminders: sends are keyed by (event, kind, start, revision, participant), a move
deletes every pending job of the old schedule (its email.send jobs too), and a run for an old revision does
nothing and says why."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from services.email_worker.handlers import build_handlers
from shared.kinds import EMAIL_SERVICE, platform_registry
from shared.runtime import Runtime, open_runtime
from tests.conftest import StartWorker
from tests.support.api_probe import platform_api
from tests.support.domain_rows import insert_participants
from tests.support.environment import TestEnvironment
from tests.support.smtp import Received, SmtpSink
from tests.support.waiting import eventually

PARTICIPANTS = 5


@pytest.fixture
def overrides(sink: SmtpSink) -> dict[str, Any]:
    return {"smtp_port": sink.port, "retry_delays": (1, 1), "retry_attempts": 3, "smtp_timeout_seconds": 10}


@pytest.fixture
async def platform(env: TestEnvironment, overrides: dict[str, Any]) -> AsyncIterator[Runtime]:
    async with open_runtime(env.settings(**overrides), platform_registry()) as runtime:
        yield runtime


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env) as client:
        yield client


@pytest.fixture
async def email_worker(env: TestEnvironment, start_worker: StartWorker, overrides: dict[str, Any]) -> None:
    await start_worker(registry=platform_registry(), handlers=build_handlers(env.settings(**overrides)),
                       service=EMAIL_SERVICE, **overrides)


async def call(api: TestClient[Any, Any], method: str, path: str, status: int = 200, **options: Any) -> Any:
    response = await api.request(method, path, **options)
    assert response.status == status, await response.text()
    return await response.json()


def start_text(message: Received) -> str:
    found = re.search(r" starts (.+?)\.\r?\n", message.body("plain"))
    assert found, message.body("plain")
    return found.group(1)


def reminder_id(event: dict[str, Any]) -> str:
    return next(job["id"] for job in event["scheduled_jobs"]
                if job["kind"] == "event.reminder" and job["state"] == "scheduled")


async def finished(pool: asyncpg.Pool, job_id: uuid.UUID) -> asyncpg.Record:
    async def final() -> asyncpg.Record | None:
        row = await pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        return row if row is not None and row["state"] in ("succeeded", "failed") else None

    return await eventually(final, timeout=60, what=f"job {job_id} to finish")


@pytest.mark.usefixtures("email_worker")
async def test_a_moved_event_reminds_everyone_again_with_the_new_time(
    api: TestClient[Any, Any], platform: Runtime, sink: SmtpSink
) -> None:
    old_start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    event = await call(api, "POST", "/api/events", 201, json={"title": "Launch", "starts_at": old_start.isoformat()})
    await insert_participants(platform.pool, uuid.UUID(event["id"]), PARTICIPANTS)
    await call(api, "POST", f"/api/jobs/{reminder_id(event)}/enqueue")
    first = await sink.wait_for(PARTICIPANTS)
    old_text = start_text(first[0])

    moved = await call(api, "PATCH", f"/api/events/{event['id']}",
                       json={"starts_at": (old_start + timedelta(days=7)).isoformat()})
    await call(api, "POST", f"/api/jobs/{reminder_id(moved)}/enqueue")
    everything = await sink.wait_for(2 * PARTICIPANTS, timeout=60)

    after_move = everything[PARTICIPANTS:]
    assert sorted(r for item in after_move for r in item.recipients) == sorted(
        r for item in first for r in item.recipients)
    new_text = start_text(after_move[0])
    assert new_text != old_text
    assert all(new_text in item.body("plain") and old_text not in item.body("plain") for item in after_move)
    assert len({item.message_id for item in everything}) == 2 * PARTICIPANTS
    rows = await platform.pool.fetch("SELECT idempotency_key FROM emails WHERE template = 'event_reminder'")
    assert len({row["idempotency_key"] for row in rows}) == 2 * PARTICIPANTS


@pytest.mark.usefixtures("email_worker")
async def test_a_run_for_an_old_schedule_revision_sends_nothing_and_says_why(
    api: TestClient[Any, Any], platform: Runtime, sink: SmtpSink
) -> None:
    start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    event = await call(api, "POST", "/api/events", 201, json={"title": "Launch", "starts_at": start.isoformat()})
    [(participant_id, address)] = await insert_participants(platform.pool, uuid.UUID(event["id"]), 1)
    await call(api, "PATCH", f"/api/events/{event['id']}", json={"starts_at": (start + timedelta(days=7)).isoformat()})

    stale_fan_out = await platform.client.enqueue("event.reminder", {
        "event_id": event["id"], "starts_at": start.isoformat(), "schedule_revision": 0})
    stale_send = await platform.client.enqueue("email.send", {
        "to": address, "subject": "Reminder: Launch", "template": "event_reminder", "event_id": event["id"],
        "participant_id": str(participant_id), "schedule_revision": 0,
        "context": {"name": "P", "title": "Launch", "starts_at_text": "old", "location": None}})
    assert stale_fan_out is not None and stale_send is not None

    for job_id in (stale_fan_out.id, stale_send.id):
        row = await finished(platform.pool, job_id)
        assert row["state"] == "succeeded"
        assert "planned for schedule revision 0, but the event is at revision 1" in row["result"]["skipped"]

        async def says_why(job_id: uuid.UUID = job_id) -> bool:  # log lines are flushed in batches
            return bool(await platform.pool.fetchval(
                "SELECT count(*) FROM job_logs WHERE job_id = $1 AND message LIKE '%planned for schedule revision 0%'",
                job_id))

        await eventually(says_why, timeout=30, what="the log line saying why nothing was sent")
    assert sink.messages == []


async def test_moving_or_cancelling_deletes_the_pending_sends_of_the_old_schedule(
    api: TestClient[Any, Any], platform: Runtime
) -> None:
    start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    event = await call(api, "POST", "/api/events", 201, json={"title": "Launch", "starts_at": start.isoformat()})
    later = datetime.now(UTC) + timedelta(hours=1)  # still waiting (a send retrying looks the same to a move)

    async def send(**extra: Any) -> uuid.UUID:
        job = await platform.client.enqueue("email.send", {
            "to": "p@example.com", "subject": "Reminder: Launch", "event_id": event["id"], **extra}, run_at=later)
        assert job is not None
        return job.id

    old_send, announcement = await send(schedule_revision=0), await send()
    await call(api, "PATCH", f"/api/events/{event['id']}", json={"starts_at": (start + timedelta(days=7)).isoformat()})

    states = {row["id"]: (row["state"], row["state_reason"]) for row in await platform.pool.fetch(
        "SELECT id, state, state_reason FROM jobs WHERE id = ANY($1::uuid[])", [old_send, announcement])}
    assert states[old_send][0] == "deleted" and states[old_send][1].startswith("event moved from")
    assert states[announcement] == ("scheduled", None)  # other mail about the event is not the schedule's

    new_send = await send(schedule_revision=1)
    await call(api, "POST", f"/api/events/{event['id']}/cancel")
    assert await platform.pool.fetchval("SELECT state_reason FROM jobs WHERE id = $1", new_send) == "event cancelled"


@pytest.mark.usefixtures("email_worker")
async def test_an_event_in_its_own_time_zone_is_announced_in_it(
    api: TestClient[Any, Any], platform: Runtime, sink: SmtpSink
) -> None:
    # 18:00 in Berlin (summer time), while the server's SCHEDULER_TIMEZONE is UTC.
    event = await call(api, "POST", "/api/events", 201, json={
        "title": "Launch", "starts_at": "2031-07-01T18:00:00+02:00", "timezone": "Europe/Berlin"})
    assert event["timezone"] == "Europe/Berlin"
    default = await call(api, "POST", "/api/events", 201, json={"title": "Plain", "starts_at": "2031-07-01T18:00:00Z"})
    assert default["timezone"] == "UTC"
    bad = await api.post("/api/events", json={"title": "X", "starts_at": "2031-07-01T18:00:00Z",
                                              "timezone": "Mars/Base"})
    assert bad.status == 422 and (await bad.json())["error"]["details"][0]["field"] == "timezone"

    await insert_participants(platform.pool, uuid.UUID(event["id"]), 1)
    await call(api, "POST", f"/api/jobs/{reminder_id(event)}/enqueue")
    [message] = await sink.wait_for(1)
    assert start_text(message) == "Tuesday 01 July 2031, 18:00 CEST"

    moved = await call(api, "PATCH", f"/api/events/{event['id']}", json={"timezone": "America/New_York"})
    assert moved["timezone"] == "America/New_York"
