"""SMTP trouble seen from outside: a deferring server is retried, a rejecting one fails the job at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.environment import TestEnvironment
from tests.support.services import RunningServices, running_services
from tests.support.smtp import SmtpSink
from tests.support.waiting import eventually


@pytest.fixture
async def services(env: TestEnvironment, sink: SmtpSink) -> AsyncIterator[RunningServices]:
    async with running_services(env, sink.port, retry_delays="1,1", retry_attempts=3,
                                names=("api", "scheduler", "email_worker")) as running:
        yield running


async def sign_up(http: aiohttp.ClientSession, services: RunningServices, address: str) -> str:
    async with http.post(f"{services.base_url}/api/users", json={"email": address, "name": "Test User"}) as response:
        assert response.status == 201, await response.text()
        user: dict[str, Any] = await response.json()
    return str(user["welcome_job_id"])


async def finished_job(http: aiohttp.ClientSession, services: RunningServices, job_id: str) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        async with http.get(f"{services.base_url}/api/jobs/{job_id}") as response:
            assert response.status == 200, await response.text()
            job: dict[str, Any] = await response.json()
        return job if job["state"] in ("succeeded", "failed") else None

    return await eventually(final, timeout=60, interval=0.25, what=f"job {job_id} to finish")


async def test_deferred_twice_is_sent_on_attempt_three_and_a_rejected_recipient_fails_at_once(
    services: RunningServices, sink: SmtpSink, http: aiohttp.ClientSession, env: TestEnvironment
) -> None:
    sink.defer(2)
    deferred_job = await sign_up(http, services, "patient@example.com")

    job = await finished_job(http, services, deferred_job)
    assert (job["state"], job["attempt"]) == ("succeeded", 3)
    assert sink.deferred == 2
    [received] = sink.to("patient@example.com")
    assert received.message_id == f"<{deferred_job}@eventjobs>"

    sink.reject("ghost@example.com", "550 5.1.1 <ghost@example.com>: recipient unknown")
    rejected_job = await sign_up(http, services, "ghost@example.com")

    job = await finished_job(http, services, rejected_job)
    assert (job["state"], job["attempt"]) == ("failed", 1)
    assert "550" in job["last_error"]
    assert sink.to("ghost@example.com") == []

    connection = await asyncpg.connect(env.database_url)
    try:
        rows = {row["recipient"]: row for row in await connection.fetch("SELECT * FROM emails")}
    finally:
        await connection.close()
    assert (rows["patient@example.com"]["status"], rows["patient@example.com"]["attempts"]) == ("sent", 3)
    ghost = rows["ghost@example.com"]
    assert (ghost["status"], ghost["attempts"], ghost["smtp_code"]) == ("failed", 1, 550)
    assert ghost["smtp_reply"] == "5.1.1 <ghost@example.com>: recipient unknown"
