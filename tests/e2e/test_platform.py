"""The platform as an operator runs it: four processes, real Postgres, RabbitMQ and SMTP, driven over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.environment import TestEnvironment
from tests.support.services import RunningServices, running_services
from tests.support.smtp import SmtpSink
from tests.support.waiting import eventually

REMINDER_LEAD = timedelta(days=1)
REMINDER_TIMEOUT = 90.0  # the reminders are due 15-35 s after setup; the rest is slack for a busy machine


@pytest.fixture
async def services(env: TestEnvironment, sink: SmtpSink) -> AsyncIterator[RunningServices]:
    async with running_services(env, sink.port, retry_delays="1,1") as running:
        yield running


async def call(http: aiohttp.ClientSession, method: str, url: str, body: dict[str, Any] | None = None,
               status: int = 201) -> dict[str, Any]:
    async with http.request(method, url, json=body) as response:
        assert response.status == status, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def job_of(event: dict[str, Any], kind: str) -> dict[str, Any]:
    [job] = [job for job in event["scheduled_jobs"] if job["kind"] == kind]
    return job


async def test_a_sign_up_gets_its_welcome_email_with_an_audited_smtp_reply(
    services: RunningServices, sink: SmtpSink, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    user = await call(http, "POST", f"{services.base_url}/api/users",
                      {"email": "ada@example.com", "name": "Ada Lovelace"})

    [welcome] = await sink.wait_for(1, recipient="ada@example.com", timeout=30)
    assert "Ada Lovelace" in welcome.subject

    async def audit_row() -> asyncpg.Record | None:
        row = await db.fetchrow("SELECT * FROM emails WHERE recipient = $1", "ada@example.com")
        return row if row is not None and row["status"] == "sent" else None

    row = await eventually(audit_row, timeout=30, what="the welcome email's audit row to be `sent`")
    assert row["job_id"] == uuid.UUID(user["welcome_job_id"])
    assert row["smtp_code"] == 250
    assert "OK queued as 1" in row["smtp_reply"]  # the sink's own reply text, recorded verbatim
    assert row["message_id"] == welcome.message_id
    assert row["attempts"] == 1


async def test_reminders_reach_participants_at_the_start_they_have_now_and_never_for_cancelled_events(
    services: RunningServices, sink: SmtpSink, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    base = services.base_url
    start = datetime.now(UTC) + REMINDER_LEAD + timedelta(seconds=15)
    events = {
        name: await call(http, "POST", f"{base}/api/events",
                         {"title": f"{name} meetup", "starts_at": start.isoformat()})
        for name in ("kept", "moved", "cancelled")
    }
    people = {name: [f"{name}-{n}@example.com" for n in range(3)] for name in events}
    for name, event in events.items():
        for address in people[name]:
            await call(http, "POST", f"{base}/api/events/{event['id']}/participants",
                       {"email": address, "name": f"Guest {address.split('@')[0]}"})

    old_reminder = job_of(events["moved"], "event.reminder")
    new_start = start + timedelta(seconds=20)
    moved = await call(http, "PATCH", f"{base}/api/events/{events['moved']['id']}",
                       {"starts_at": new_start.isoformat()}, status=200)
    # Cancel once its confirmations are out: a confirmation still queued at the cancel is skipped by design.
    for address in people["cancelled"]:
        await sink.wait_for(1, recipient=address, timeout=10)
    cancelled = await call(http, "POST", f"{base}/api/events/{events['cancelled']['id']}/cancel", status=200)
    # The setup must be done before the old reminder time, or this test would prove nothing.
    assert datetime.now(UTC) < datetime.fromisoformat(old_reminder["run_at"]), "setup took longer than 15 s"
    new_reminder = job_of(moved, "event.reminder")
    assert datetime.fromisoformat(new_reminder["run_at"]) == new_start - REMINDER_LEAD
    assert cancelled["scheduled_jobs"] == []

    # Confirmations go out now, reminders when due: everyone of the kept and the moved event gets two.
    for name in ("kept", "moved"):
        for address in people[name]:
            await sink.wait_for(2, recipient=address, timeout=REMINDER_TIMEOUT)
    # By now the original reminder time has long passed (the moved reminder is later): nothing else came.
    for name, reminders in (("kept", 1), ("moved", 1), ("cancelled", 0)):
        for address in people[name]:
            subjects = [message.subject for message in sink.to(address)]
            assert all(f"{name} meetup" in subject for subject in subjects), subjects
            assert sorted(subject.split(":")[0] for subject in subjects) == sorted(
                ["You are registered", *["Reminder"] * reminders]), (address, subjects)

    jobs = {row["id"]: row for row in await db.fetch("SELECT * FROM jobs WHERE kind = 'event.reminder'")}
    for reminder in (job_of(events["kept"], "event.reminder"), new_reminder):
        ran = jobs[uuid.UUID(reminder["id"])]
        assert ran["state"] == "succeeded"
        assert ran["started_at"] >= ran["run_at"]  # never before its time
    replaced = jobs[uuid.UUID(old_reminder["id"])]
    assert (replaced["state"], replaced["started_at"]) == ("deleted", None)
    assert "moved" in replaced["state_reason"]
    for job in events["cancelled"]["scheduled_jobs"]:
        row = await db.fetchrow("SELECT state, state_reason, started_at FROM jobs WHERE id = $1", uuid.UUID(job["id"]))
        assert tuple(row) == ("deleted", "event cancelled", None)
    sent = await db.fetchval("SELECT count(*) FROM emails WHERE status = 'sent' AND template = 'event_reminder'")
    assert sent == 6
