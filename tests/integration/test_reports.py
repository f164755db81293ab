"""The daily reports can be read: `GET /api/reports` and the dashboard's Reports page."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment

CONTENT = {"day": "2031-05-01", "timezone": "Europe/Berlin", "events_created": 4, "participants_registered": 17,
           "emails": {"sent": 30, "failed": 2},
           "jobs": [{"kind": "email.send", "succeeded": 28, "failed": 2},
                    {"kind": "email.welcome", "succeeded": 3, "failed": 0}],
           "lateness": [{"kind": "email.send", "count": 30, "p50_seconds": 0.25, "p99_seconds": 4.5}]}


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    connection = await asyncpg.connect(env.database_url)
    try:
        for day, content in ((date(2031, 4, 30), {"day": "2031-04-30", "jobs": [], "lateness": []}),
                             (date(2031, 5, 1), CONTENT)):
            await connection.execute("INSERT INTO reports (day, content, job_id) VALUES ($1, $2::jsonb, $3)",
                                     day, json.dumps(content), uuid.uuid4())
    finally:
        await connection.close()
    async with platform_api(env) as client:
        yield client


async def test_the_api_lists_reports_newest_first(api: TestClient[Any, Any]) -> None:
    response = await api.get("/api/reports")
    assert response.status == 200
    reports = (await response.json())["reports"]
    assert [report["day"] for report in reports] == ["2031-05-01", "2031-04-30"]
    assert reports[0]["content"] == CONTENT

    response = await api.get("/api/reports?limit=1")
    assert [report["day"] for report in (await response.json())["reports"]] == ["2031-05-01"]
    response = await api.get("/api/reports?limit=0")
    assert response.status == 422
    assert (await response.json())["error"]["details"] == [{"field": "query.limit", "message": "must be at least 1"}]


async def test_the_reports_page_shows_the_figures_failures_and_lateness(api: TestClient[Any, Any]) -> None:
    response = await api.get("/jobs/reports")
    assert response.status == 200
    html = await response.text()
    assert 'aria-current="page"' in html and ">Reports</a>" in html
    assert html.index("2031-05-01") < html.index("2031-04-30")
    for text in ("Europe/Berlin", ">17<", ">30<", "email.send", 'state=failed&amp;kind=email.send">2<',
                 "No job finished that day."):
        assert text in html, text
