"""POST /api/jobs and GET /api/jobs/{id} through the real aiohttp app, Postgres and RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import StartWorker
from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment
from tests.support.kinds import test_registry
from tests.support.waiting import eventually


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env, registry=test_registry()) as client:
        yield client


async def test_a_job_enqueued_over_http_is_watched_to_succeeded(
    api: TestClient[Any, Any], start_worker: StartWorker
) -> None:
    await start_worker()
    response = await api.post("/api/jobs", json={"kind": "test.noop", "args": {"n": 7}})
    assert response.status == 202, await response.text()
    job = await response.json()
    assert job["state"] == "enqueued"

    async def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = await (await api.get(f"/api/jobs/{job['id']}")).json()
        return body if body["state"] == "succeeded" else None

    done = await eventually(finished, what="the job to succeed")
    assert [step["state"] for step in done["history"]] == ["enqueued", "processing", "succeeded"]
    assert done["result"] == {"n": 7}


async def test_unknown_kinds_and_bad_arguments_are_refused_naming_the_field(api: TestClient[Any, Any]) -> None:
    response = await api.post("/api/jobs", json={"kind": "no.such.kind"})
    assert response.status == 422
    assert (await response.json())["error"]["details"][0]["field"] == "kind"

    response = await api.post("/api/jobs", json={"kind": "test.noop", "args": {"n": "many"}})
    assert response.status == 422
    assert (await response.json())["error"]["details"][0]["field"] == "args.n"

    response = await api.post("/api/jobs", data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "malformed_json"


async def test_openapi_describes_the_served_routes(api: TestClient[Any, Any]) -> None:
    document = await (await api.get("/api/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    assert document["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobRequest"
    }
