"""PUT / DELETE /api/recurring/{id}: definitions created, replaced and removed at run time, fired by a scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.runtime import Runtime
from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment
from tests.support.kinds import test_registry
from tests.support.live_api import browser_session, csrf_from, running_api
from tests.support.scheduler import StartScheduler, start_scheduler_fixture  # noqa: F401  (fixture)
from tests.support.waiting import eventually

Client = TestClient[Any, Any]


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[Client]:
    async with platform_api(env, registry=test_registry()) as client:
        yield client


async def put(api: Client, recurring_id: str, body: dict[str, Any], status: int) -> dict[str, Any]:
    response = await api.put(f"/api/recurring/{recurring_id}", json=body)
    assert response.status == status, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def test_put_creates_then_replaces_and_delete_removes(api: Client) -> None:
    created = await put(api, "nightly-noop", {"kind": "test.noop", "args": {"n": 1}, "cron": "0 3 * * *"}, 201)
    assert (created["kind"], created["args"], created["cron"], created["timezone"], created["queue"],
            created["misfire_policy"], created["enabled"]) == (
        "test.noop", {"n": 1}, "0 3 * * *", "UTC", None, "fire_once", True)
    replaced = await put(api, "nightly-noop", {"kind": "test.log", "args": {"message": "hi"}, "cron": "30 4 * * *",
                                               "timezone": "Europe/Paris", "misfire_policy": "skip",
                                               "queue": "critical"}, 200)
    assert (replaced["kind"], replaced["timezone"], replaced["misfire_policy"], replaced["queue"]) == (
        "test.log", "Europe/Paris", "skip", "critical")
    listed = {item["id"]: item for item in await (await api.get("/api/recurring")).json()}
    assert listed["nightly-noop"]["cron"] == "30 4 * * *"

    assert (await api.delete("/api/recurring/nightly-noop")).status == 204
    assert (await api.get("/api/recurring/nightly-noop")).status in (404, 405)
    missing = await api.delete("/api/recurring/nightly-noop")
    assert missing.status == 404
    assert (await missing.json())["error"]["details"][0]["field"] == "recurring_id"


@pytest.mark.parametrize(("recurring_id", "body", "field"), [
    ("ok", {"kind": "test.nope", "cron": "* * * * *"}, "kind"),
    ("ok", {"kind": "test.noop", "args": {"n": "many"}, "cron": "* * * * *"}, "args.n"),
    ("ok", {"kind": "test.noop", "cron": "61 * * * *"}, "cron"),
    ("ok", {"kind": "test.noop", "cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ("ok", {"kind": "test.noop", "cron": "* * * * *", "misfire_policy": "sometimes"}, "misfire_policy"),
    ("ok", {"kind": "test.noop", "cron": "* * * * *", "queue": "urgent"}, "queue"),
    ("ok", {"kind": "test.noop", "cron": "* * * * *", "colour": "red"}, "colour"),
    ("-bad id", {"kind": "test.noop", "cron": "* * * * *"}, "recurring_id"),
])
async def test_a_bad_definition_is_refused_naming_its_field(
    api: Client, runtime: Runtime, recurring_id: str, body: dict[str, Any], field: str
) -> None:
    response = await api.put(f"/api/recurring/{recurring_id}", json=body)
    assert response.status == 422, await response.text()
    fields = [detail["field"] for detail in (await response.json())["error"]["details"]]
    assert any(name.endswith(field) for name in fields), fields
    assert await runtime.pool.fetchval("SELECT count(*) FROM recurring_jobs WHERE id = $1", recurring_id) == 0


async def fired(runtime: Runtime, recurring_id: str) -> list[Any]:
    return list(await runtime.pool.fetch(
        "SELECT fire_time, created_at, queue FROM jobs WHERE recurring_id = $1 ORDER BY fire_time", recurring_id))


async def test_a_job_created_over_http_fires_on_time_and_a_deleted_one_never_again(
    api: Client, runtime: Runtime, start_scheduler: StartScheduler
) -> None:
    await start_scheduler()
    await put(api, "every-2s", {"kind": "test.noop", "cron": "*/2 * * * * *", "queue": "low"}, 201)
    runs = await eventually(lambda: fired(runtime, "every-2s"), timeout=15, what="the first occurrence")
    late = (runs[0]["created_at"] - runs[0]["fire_time"]).total_seconds()
    print(f"recurring job created over HTTP: first occurrence enqueued {late * 1000:.0f} ms after its fire time")
    assert 0 <= late < 1.0 and runs[0]["queue"] == "low"

    assert (await api.delete("/api/recurring/every-2s")).status == 204
    deleted_at = datetime.now(UTC)
    # A definition put after the delete: once it has fired twice the scheduler has seen both changes.
    await put(api, "marker", {"kind": "test.noop", "cron": "* * * * * *"}, 201)

    async def marker_fired_twice() -> bool:
        return len(await fired(runtime, "marker")) >= 2

    await eventually(marker_fired_twice, timeout=15, what="the marker to fire twice")
    after = [run for run in await fired(runtime, "every-2s") if run["fire_time"] > deleted_at]
    assert after == []


async def test_the_dashboard_creates_explains_bad_values_and_deletes(env: TestEnvironment, runtime: Runtime) -> None:
    async with running_api(env.settings(), test_registry()) as port:
        base = f"http://127.0.0.1:{port}"
        async with browser_session(Origin=base) as browser:
            async with browser.get(f"{base}/jobs/recurring") as response:
                html = await response.text()
            assert "New or replaced recurring job" in html
            form = {"id": "from-the-form", "kind": "test.noop", "args": '{"n": 3}', "cron": "61 * * * *",
                    "timezone": "UTC", "misfire_policy": "skip", "queue": "", "csrf_token": csrf_from(html)}
            async with browser.post(f"{base}/jobs/recurring/new", data=form, allow_redirects=False) as response:
                shown = await response.text()
                assert response.status == 422
            assert 'role="alert"' in shown and "61 * * * *" in shown  # the message beside the field, value kept
            form = {**form, "cron": "15 6 * * *", "csrf_token": csrf_from(shown)}
            async with browser.post(f"{base}/jobs/recurring/new", data=form, allow_redirects=False) as response:
                assert response.status == 303, await response.text()
            row = await runtime.pool.fetchrow("SELECT * FROM recurring_jobs WHERE id = 'from-the-form'")
            assert row is not None and (row["cron"], row["args"], row["misfire_policy"], row["queue"]) == (
                "15 6 * * *", {"n": 3}, "skip", None)

            async with browser.get(f"{base}/jobs/recurring") as response:
                html = await response.text()
            async with browser.post(f"{base}/jobs/recurring/from-the-form/delete",
                                    data={"csrf_token": csrf_from(html)}, allow_redirects=False) as response:
                assert response.status == 303
            assert await runtime.pool.fetchval("SELECT count(*) FROM recurring_jobs WHERE id = 'from-the-form'") == 0
