"""kill -9 the email worker in the middle of a 1,000-participant reminder: nobody is mailed twice in the audit,
everybody is mailed, and the sink sees at most a prefetch's worth of repeated Message-IDs."""

from __future__ import annotations

import asyncio
import sys
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

PARTICIPANTS = 1000
PREFETCH = 10


@pytest.fixture
async def services(env: TestEnvironment, sink: SmtpSink) -> AsyncIterator[RunningServices]:
    async with running_services(env, sink.port, retry_delays="1,1", worker_concurrency=PREFETCH,
                                worker_prefetch=PREFETCH, names=("api", "scheduler", "email_worker")) as running:
        yield running


@pytest.fixture
async def db(env: TestEnvironment) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(env.database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], status: int) -> dict[str, Any]:
    async with http.post(url, json=body) as response:
        assert response.status == status, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def reminders(sink: SmtpSink) -> list[str]:
    return [item.message_id for item in sink.messages if item.subject.startswith("Reminder:")]


async def test_killing_the_email_worker_mid_fan_out_mails_everyone_once(
    services: RunningServices, sink: SmtpSink, http: aiohttp.ClientSession, db: asyncpg.Pool
) -> None:
    base = services.base_url
    event = await post(http, f"{base}/api/events", {
        "title": "Crash course", "starts_at": (datetime.now(UTC) + timedelta(days=3)).isoformat()}, 201)
    registrations = asyncio.Semaphore(20)

    async def register(n: int) -> None:
        async with registrations:
            await post(http, f"{base}/api/events/{event['id']}/participants",
                       {"email": f"guest{n:04d}@example.com", "name": f"Guest {n}"}, 201)

    await asyncio.gather(*(register(n) for n in range(PARTICIPANTS)))
    # Let the confirmations drain first, so the kill lands on the reminder alone.
    await sink.wait_for(PARTICIPANTS, timeout=300)

    reminder = await post(http, f"{base}/api/jobs", {"kind": "event.reminder", "args": {"event_id": event["id"]}},
                          202)

    async def sending_started() -> bool:
        return len(reminders(sink)) > 0

    await eventually(sending_started, timeout=60, interval=0.02, what="the first reminder to reach the sink")
    await services.kill("email_worker")
    fanned_out = await db.fetchval(
        "SELECT count(*) FROM jobs WHERE kind = 'email.send' AND parent_id = $1", uuid.UUID(reminder["id"]))
    delivered_before_kill = len(reminders(sink))
    assert delivered_before_kill < PARTICIPANTS, "the kill came too late to interrupt anything"
    print(f"killed with {fanned_out} email.send jobs enqueued and {delivered_before_kill} reminders delivered",
          file=sys.stderr)

    await services.start("email_worker")

    async def everyone_sent() -> int:
        count: int = await db.fetchval(
            """SELECT count(*) FROM participants p
                WHERE p.event_id = $1
                  AND (SELECT count(*) FROM emails e
                        WHERE e.participant_id = p.id AND e.template = 'event_reminder' AND e.status = 'sent') = 1""",
            uuid.UUID(event["id"]),
        )
        return count if count == PARTICIPANTS else 0

    await eventually(everyone_sent, timeout=300, interval=0.5, what="one `sent` reminder row per participant")
    rows = await db.fetchval("SELECT count(*) FROM emails WHERE template = 'event_reminder'")
    assert rows == PARTICIPANTS
    assert await db.fetchval("SELECT state FROM jobs WHERE id = $1", uuid.UUID(reminder["id"])) == "succeeded"

    delivered = reminders(sink)
    recipients = {recipient for item in sink.messages if item.subject.startswith("Reminder:")
                  for recipient in item.recipients}
    assert len(recipients) == PARTICIPANTS
    duplicates = len(delivered) - len(set(delivered))
    print(f"{len(delivered)} reminders delivered, {duplicates} repeated Message-IDs", file=sys.stderr)
    assert duplicates <= PREFETCH

