"""Operator actions on jobs over HTTP: search, pages, requeue, delete, enqueue now, bulk; real PG and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import StartWorker
from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment
from tests.support.kinds import BROKEN, test_registry
from tests.support.waiting import eventually

Client = TestClient[Any, Any]


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[Client]:
    async with platform_api(env, registry=test_registry()) as client:
        yield client


async def enqueue(api: Client, kind: str, args: dict[str, Any], **options: Any) -> dict[str, Any]:
    response = await api.post("/api/jobs", json={"kind": kind, "args": args, **options})
    assert response.status == 202, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def job_in_state(api: Client, job_id: str, state: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = await (await api.get(f"/api/jobs/{job_id}")).json()
        return body if body["state"] == state else None

    return await eventually(probe, what=f"job {job_id} to be {state}")


async def listed(api: Client, **query: Any) -> dict[str, Any]:
    response = await api.get("/api/jobs", params={key: str(value) for key, value in query.items()})
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_failed_job_found_by_its_error_text_is_requeued_and_succeeds(
    api: Client, start_worker: StartWorker
) -> None:
    switch = f"relay-{uuid.uuid4().hex[:8]}"
    BROKEN.add(switch)
    try:
        await start_worker()
        failing = await enqueue(api, "test.until_fixed", {"switch": switch}, max_attempts=1)
        healthy = await enqueue(api, "test.noop", {"n": 1})
        await job_in_state(api, failing["id"], "failed")
        await job_in_state(api, healthy["id"], "succeeded")

        # The needle is only in the error text ("switch <name> is broken"), not in the arguments.
        found = await listed(api, q=f"{switch} IS BROKEN")
        assert [job["id"] for job in found["items"]] == [failing["id"]]
        assert found["items"][0]["last_error"] == f"RuntimeError: switch {switch} is broken"
        assert (await listed(api, q=f"{switch} IS BROKEN", state="succeeded"))["items"] == []
        assert [job["id"] for job in (await listed(api, q=failing["id"]))["items"]] == [failing["id"]]
    finally:
        BROKEN.discard(switch)

    response = await api.post(f"/api/jobs/{failing['id']}/requeue")
    assert response.status == 200, await response.text()
    assert (await response.json())["state"] in {"enqueued", "processing", "succeeded"}
    done = await job_in_state(api, failing["id"], "succeeded")
    assert [step["state"] for step in done["history"]] == [
        "enqueued", "processing", "failed", "enqueued", "processing", "succeeded"
    ]
    assert done["history"][3]["reason"] == "requeued by operator"


async def test_deleting_a_scheduled_job_and_the_states_that_refuse_actions(api: Client) -> None:
    job = await enqueue(api, "test.noop", {"n": 2}, delay_seconds=3600)
    assert job["state"] == "scheduled"

    response = await api.post(f"/api/jobs/{job['id']}/delete")
    assert response.status == 200, await response.text()
    assert (await response.json())["state"] == "deleted"
    assert [item["id"] for item in (await listed(api, state="deleted"))["items"]] == [job["id"]]
    assert (await listed(api, state="scheduled"))["items"] == []

    again = await api.post(f"/api/jobs/{job['id']}/delete")
    assert again.status == 409
    error = (await again.json())["error"]
    assert error["code"] == "invalid_state" and "deleted" in error["message"]
    assert error["details"][0]["field"] == "state"

    not_scheduled = await api.post(f"/api/jobs/{job['id']}/enqueue")
    assert not_scheduled.status == 409

    missing = await api.post(f"/api/jobs/{uuid.uuid4()}/requeue")
    assert missing.status == 404
    assert (await missing.json())["error"]["details"][0]["field"] == "job_id"
    assert (await api.post("/api/jobs/not-a-uuid/delete")).status == 404


async def test_enqueue_now_runs_a_scheduled_job_without_waiting_for_its_time(
    api: Client, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await enqueue(api, "test.noop", {"n": 3}, delay_seconds=3600)
    assert job["state"] == "scheduled"

    response = await api.post(f"/api/jobs/{job['id']}/enqueue")
    assert response.status == 200, await response.text()
    done = await job_in_state(api, job["id"], "succeeded")
    assert done["result"] == {"n": 3}
    assert done["history"][1]["reason"] == "enqueued now by operator"


async def test_pages_follow_the_cursor_without_gaps_or_repeats(api: Client) -> None:
    created = [await enqueue(api, "test.noop", {"n": n}, delay_seconds=600) for n in range(7)]
    await enqueue(api, "test.log", {"message": "another kind"}, delay_seconds=600)

    seen: list[str] = []
    cursor: str | None = None
    sizes = []
    while True:
        page = await listed(api, kind="test.noop", limit=3, **({"cursor": cursor} if cursor else {}))
        sizes.append(len(page["items"]))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert sorted(seen) == sorted(job["id"] for job in created)
    assert seen == [job["id"] for job in reversed(created)]  # newest change first

    bad = await api.get("/api/jobs", params={"cursor": "bm90IGEgY3Vyc29y"})
    assert bad.status == 422
    assert (await bad.json())["error"]["details"][0]["field"] == "query.cursor"
    bad = await api.get("/api/jobs", params={"state": "sleeping"})
    assert bad.status == 422
    assert (await bad.json())["error"]["details"][0]["field"] == "query.state"


async def test_bulk_requeue_of_the_failed_jobs_matching_a_search(api: Client, start_worker: StartWorker) -> None:
    switch = f"bulk-{uuid.uuid4().hex[:8]}"
    BROKEN.add(switch)
    try:
        await start_worker()
        failing = [await enqueue(api, "test.until_fixed", {"switch": switch}, max_attempts=1,
                                 idempotency_key=f"{switch}-{n}") for n in range(3)]
        other = await enqueue(api, "test.permanent", {"n": 9})
        for job in failing:
            await job_in_state(api, job["id"], "failed")
        await job_in_state(api, other["id"], "failed")
    finally:
        BROKEN.discard(switch)

    refused = await api.post("/api/jobs/bulk-requeue", json={"q": switch})
    assert refused.status == 422  # a filter without a state could touch everything

    response = await api.post("/api/jobs/bulk-requeue", json={"state": "failed", "q": switch})
    assert response.status == 200, await response.text()
    result = await response.json()
    assert result["changed"] == 3 and sorted(result["ids"]) == sorted(job["id"] for job in failing)
    for job in failing:
        await job_in_state(api, job["id"], "succeeded")
    assert (await (await api.get(f"/api/jobs/{other['id']}")).json())["state"] == "failed"

    deleted = await api.post("/api/jobs/bulk-delete", json={"ids": [other["id"], failing[0]["id"]]})
    assert deleted.status == 200
    body = await deleted.json()
    assert (body["changed"], body["skipped"]) == (2, 0)
    assert sorted(body["ids"]) == sorted([other["id"], failing[0]["id"]])
    assert (await (await api.get(f"/api/jobs/{other['id']}")).json())["state"] == "deleted"
