"""Through the running services: an event's reminder went out, the event moves by a week, and the new
reminder reaches every participant with the new time; nothing sent after the move mentions the old time."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.support.environment import TestEnvironment
from tests.support.services import RunningServices, running_services
from tests.support.smtp import Received, SmtpSink

PARTICIPANTS = 25


@pytest.fixture
async def services(env: TestEnvironment, sink: SmtpSink) -> AsyncIterator[RunningServices]:
    async with running_services(env, sink.port, retry_delays="1,1",
                                names=("api", "scheduler", "email_worker")) as running:
        yield running


async def call(http: aiohttp.ClientSession, method: str, url: str, status: int = 200, **options: Any) -> Any:
    async with http.request(method, url, **options) as response:
        assert response.status == status, await response.text()
        return await response.json()


def pending_reminder(event: dict[str, Any]) -> str:
    return next(job["id"] for job in event["scheduled_jobs"]
                if job["kind"] == "event.reminder" and job["state"] == "scheduled")


def reminders(sink: SmtpSink) -> list[Received]:
    return [item for item in sink.messages if item.subject.startswith("Reminder:")]


def start_text(message: Received) -> str:
    """The time as the reminder words it: `"Title" starts <text>.`"""
    found = re.search(r" starts (.+?)\.\r?\n", message.body("plain"))
    assert found, message.body("plain")
    return found.group(1)


async def test_a_moved_event_reminds_every_participant_of_the_new_time_only(
    services: RunningServices, sink: SmtpSink, http: aiohttp.ClientSession
) -> None:
    base = services.base_url
    old_start = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    event = await call(http, "POST", f"{base}/api/events", 201,
                       json={"title": "Moving target", "starts_at": old_start.isoformat()})
    await asyncio.gather(*(
        call(http, "POST", f"{base}/api/events/{event['id']}/participants", 201,
             json={"email": f"guest{n:02d}@example.com", "name": f"Guest {n}"}) for n in range(PARTICIPANTS)))
    await sink.wait_for(PARTICIPANTS, timeout=120)  # the confirmations

    # The reminder's time has come (an operator runs it now instead of waiting a day).
    await call(http, "POST", f"{base}/api/jobs/{pending_reminder(event)}/enqueue")
    await sink.wait_for(2 * PARTICIPANTS, timeout=120)
    before = reminders(sink)
    old_text = start_text(before[0])
    assert len(before) == PARTICIPANTS and all(start_text(item) == old_text for item in before)

    moved = await call(http, "PATCH", f"{base}/api/events/{event['id']}",
                       json={"starts_at": (old_start + timedelta(weeks=1)).isoformat()})
    sent_before_move = len(sink.messages)
    await call(http, "POST", f"{base}/api/jobs/{pending_reminder(moved)}/enqueue")
    await sink.wait_for(sent_before_move + PARTICIPANTS, timeout=120)

    after = sink.messages[sent_before_move:]
    new_text = start_text(after[0])
    assert new_text != old_text
    assert sorted(r for item in after for r in item.recipients) == [
        f"guest{n:02d}@example.com" for n in range(PARTICIPANTS)]
    for item in after:
        assert item.subject == "Reminder: Moving target"
        assert new_text in item.body("plain") and new_text in item.body("html")
        assert old_text not in item.body("plain") and old_text not in item.body("html")
