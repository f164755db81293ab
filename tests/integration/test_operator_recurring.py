"""/api/recurring: next run in the job's own time zone, trigger now, pause and resume, edits validated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment
from tests.support.kinds import test_registry
from tests.support.waiting import eventually

Client = TestClient[Any, Any]


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[Client]:
    async with platform_api(env, registry=test_registry()) as client:
        yield client


async def add_recurring(runtime: Runtime, recurring_id: str, cron: str, timezone: str = "UTC") -> None:
    await runtime.pool.execute(
        "INSERT INTO recurring_jobs (id, kind, args, cron, timezone) VALUES ($1, 'test.noop', '{\"n\": 5}', $2, $3)",
        recurring_id, cron, timezone,
    )


async def recurring(api: Client, recurring_id: str) -> dict[str, Any]:
    response = await api.get("/api/recurring")
    assert response.status == 200, await response.text()
    by_id = {item["id"]: item for item in await response.json()}
    found: dict[str, Any] = by_id[recurring_id]
    return found


async def test_next_run_is_computed_in_the_jobs_time_zone(api: Client, runtime: Runtime) -> None:
    await add_recurring(runtime, "morning-in-new-york", "0 9 * * 1-5", "America/New_York")
    before = datetime.now(UTC)
    item = await recurring(api, "morning-in-new-york")
    next_run = datetime.fromisoformat(item["next_run"])
    local = next_run.astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (9, 0)
    assert local.isoweekday() <= 5  # crontab 1-5 is Monday to Friday
    assert before < next_run <= before + timedelta(days=4)
    assert (item["cron"], item["timezone"], item["enabled"], item["misfire_policy"]) == (
        "0 9 * * 1-5", "America/New_York", True, "fire_once"
    )
    assert item["last_job_id"] is None and item["last_run_at"] is None

    seeds = {entry["id"] for entry in await (await api.get("/api/recurring")).json()}
    assert {"cleanup-expired-events", "generate-daily-report", "cleanup-old-logs"} <= seeds


async def test_trigger_enqueues_a_run_that_a_worker_completes(
    api: Client, runtime: Runtime, start_worker: StartWorker
) -> None:
    await add_recurring(runtime, "nightly-noop", "0 3 * * *")
    await start_worker()
    response = await api.post("/api/recurring/nightly-noop/trigger")
    assert response.status == 202, await response.text()
    job = await response.json()
    assert (job["kind"], job["recurring_id"], job["fire_time"], job["args"]) == (
        "test.noop", "nightly-noop", None, {"n": 5}
    )
    second = await api.post("/api/recurring/nightly-noop/trigger")
    assert second.status == 202  # manual runs have no fire time, so they never collide with each other
    second_job = await second.json()
    assert second_job["id"] != job["id"]

    async def succeeded() -> bool:
        states = {
            (await (await api.get(f"/api/jobs/{job_id}")).json())["state"] for job_id in (job["id"], second_job["id"])
        }
        return states == {"succeeded"}

    await eventually(succeeded, what="both triggered runs to succeed")
    item = await recurring(api, "nightly-noop")
    assert item["last_job_id"] == second_job["id"] and item["last_job_state"] == "succeeded"

    missing = await api.post("/api/recurring/no-such-thing/trigger")
    assert missing.status == 404
    # The seed's maintenance kinds are not served by this (test) api: refused, nothing written.
    unknown = await api.post("/api/recurring/cleanup-old-logs/trigger")
    assert unknown.status == 409
    assert await runtime.pool.fetchval("SELECT count(*) FROM jobs WHERE recurring_id = 'cleanup-old-logs'") == 0


async def test_pause_resume_and_edits_with_validation_naming_the_field(api: Client, runtime: Runtime) -> None:
    await add_recurring(runtime, "editable", "*/5 * * * *")

    paused = await api.patch("/api/recurring/editable", json={"enabled": False})
    assert paused.status == 200, await paused.text()
    assert (await paused.json())["enabled"] is False and (await paused.json())["next_run"] is None
    resumed = await (await api.patch("/api/recurring/editable", json={"enabled": True})).json()
    assert resumed["enabled"] is True and resumed["next_run"] is not None

    response = await api.patch("/api/recurring/editable", json={"cron": "*/30 * * * * *", "timezone": "Asia/Tokyo"})
    assert response.status == 200, await response.text()
    edited = await response.json()
    assert (edited["cron"], edited["timezone"]) == ("*/30 * * * * *", "Asia/Tokyo")
    next_run = datetime.fromisoformat(edited["next_run"])
    assert next_run.second in (0, 30) and next_run - datetime.now(UTC) <= timedelta(seconds=31)

    for body, field in (
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "every day"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),  # February 31st never comes
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"enabled": "sometimes"}, "enabled"),
        ({"color": "blue"}, "color"),
    ):
        refused = await api.patch("/api/recurring/editable", json=body)
        assert refused.status == 422, (body, await refused.text())
        assert (await refused.json())["error"]["details"][0]["field"] == field, body
    row = await runtime.pool.fetchrow("SELECT cron, timezone, enabled FROM recurring_jobs WHERE id = 'editable'")
    assert tuple(row) == ("*/30 * * * * *", "Asia/Tokyo", True)

    assert (await api.patch("/api/recurring/nope", json={"enabled": False})).status == 404
