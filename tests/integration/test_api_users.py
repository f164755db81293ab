"""POST /api/users: the user row and its welcome job commit together; the job is on the email queue."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.support.api_probe import platform_api, queue_depth, row_counts
from tests.support.environment import TestEnvironment
from tests.support.waiting import eventually


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env) as client:
        yield client


async def test_sign_up_stores_the_user_and_publishes_its_welcome_job(
    api: TestClient[Any, Any], env: TestEnvironment
) -> None:
    response = await api.post("/api/users", json={"email": "Ada@Example.com", "name": "Ada Lovelace"})

    assert response.status == 201, await response.text()
    user = await response.json()
    assert (user["email"], user["name"]) == ("ada@example.com", "Ada Lovelace")
    connection = await asyncpg.connect(env.database_url)
    try:
        job = await connection.fetchrow("SELECT * FROM jobs WHERE id = $1", uuid.UUID(user["welcome_job_id"]))
        # Stamped a moment after the confirm (shared/published_marks.py), so the relay leaves it alone.
        await eventually(lambda: connection.fetchval("SELECT published_at IS NOT NULL FROM jobs WHERE id = $1",
                                                     job["id"]), timeout=10, what="the publish stamp")
    finally:
        await connection.close()
    assert (job["kind"], json.loads(job["args"]), job["state"], job["queue"]) == (
        "email.welcome", {"name": "Ada Lovelace", "email": "ada@example.com"}, "enqueued", "critical")
    assert await queue_depth(env) == 1


async def test_a_taken_email_is_409_naming_the_field_and_sends_nothing_more(
    api: TestClient[Any, Any], env: TestEnvironment
) -> None:
    assert (await api.post("/api/users", json={"email": "ada@example.com", "name": "Ada"})).status == 201

    response = await api.post("/api/users", json={"email": "ADA@example.com", "name": "Another Ada"})

    assert response.status == 409
    assert (await response.json())["error"]["details"] == [{"field": "email", "message": "is already registered"}]
    counts = await row_counts(env)
    assert (counts["users"], counts["jobs"]) == (1, 1)
    assert await queue_depth(env) == 1


async def test_enqueued_jobs_are_counted_by_kind_in_metrics(api: TestClient[Any, Any]) -> None:
    for n in range(3):
        assert (await api.post("/api/users", json={"email": f"u{n}@example.com", "name": f"U {n}"})).status == 201
    for _ in range(2):  # the same key twice: one job, counted once
        response = await api.post("/api/jobs", json={"kind": "maintenance.daily_report"},
                                  headers={"Idempotency-Key": "report-once"})
        assert response.status in (200, 202)

    metrics = await (await api.get("/metrics")).text()

    assert 'jobs_enqueued_total{kind="email.welcome"} 3.0' in metrics
    assert 'jobs_enqueued_total{kind="maintenance.daily_report"} 1.0' in metrics
    assert 'http_requests_total{method="POST",route="/api/users",status="201"} 3.0' in metrics
