"""The daily report triggered over HTTP reaches every address in ADMIN_EMAILS and is stored for its day."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from tests.support.environment import TestEnvironment
from tests.support.services import RunningServices, running_services
from tests.support.smtp import SmtpSink
from tests.support.waiting import eventually

ADMINS = ("ops@example.com", "boss@example.com")
TIMEZONE = "Asia/Tokyo"


@pytest.fixture
async def services(env: TestEnvironment, sink: SmtpSink) -> AsyncIterator[RunningServices]:
    async with running_services(env, sink.port, admin_emails=",".join(ADMINS), scheduler_timezone=TIMEZONE) as running:
        yield running


def yesterday_in_tokyo() -> str:
    return (datetime.now(UTC).astimezone(ZoneInfo(TIMEZONE)).date() - timedelta(days=1)).isoformat()


async def test_triggering_the_daily_report_mails_it_to_every_admin(
    services: RunningServices, sink: SmtpSink, http: aiohttp.ClientSession, env: TestEnvironment
) -> None:
    possible_days = {yesterday_in_tokyo()}
    async with http.post(f"{services.base_url}/api/recurring/generate-daily-report/trigger") as response:
        assert response.status == 202, await response.text()
        job: dict[str, Any] = await response.json()
    possible_days.add(yesterday_in_tokyo())  # the test may straddle midnight in Tokyo

    for admin in ADMINS:
        [received] = await sink.wait_for(1, recipient=admin, timeout=60)
        assert received.subject.startswith("eventjobs daily report for ")
        day = received.subject.removeprefix("eventjobs daily report for ")
        assert day in possible_days
        assert f"eventjobs daily report for {day} ({TIMEZONE})" in received.body("plain")
        assert f"Daily report for {day}" in received.body("html")

    async def finished() -> dict[str, Any] | None:
        async with http.get(f"{services.base_url}/api/jobs/{job['id']}") as response:
            body: dict[str, Any] = await response.json()
        return body if body["state"] == "succeeded" else None

    done = await eventually(finished, timeout=60, what="the report job to succeed")
    assert done["result"] == {"day": day, "mailed_to": list(ADMINS)}
    connection = await asyncpg.connect(env.database_url)
    try:
        report = await connection.fetchrow("SELECT * FROM reports WHERE day = $1::text::date", day)
    finally:
        await connection.close()
    assert report is not None and report["job_id"] == uuid.UUID(job["id"])
    content = report["content"] if isinstance(report["content"], dict) else json.loads(report["content"])
    assert (content["day"], content["timezone"]) == (day, TIMEZONE)
