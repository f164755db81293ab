"""The parking lot stays true: a job's parked copy goes when the job is requeued, deleted or succeeds, and
operators purge all, selected or older copies through the API (with an explicit body) and the dashboard."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared import parking_lot
from shared.messaging.envelope import Envelope
from shared.messaging.topology import DEAD_QUEUE
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.api_probe import platform_api
from tests.support.broker_probe import ready_count
from tests.support.environment import TestEnvironment
from tests.support.kinds import test_registry
from tests.support.waiting import eventually

Client = TestClient[Any, Any]


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[Client]:
    async with platform_api(env, registry=test_registry()) as client:
        yield client


async def parked(env: TestEnvironment, count: int) -> None:
    async def reached() -> bool:
        return await ready_count(env.amqp_url, DEAD_QUEUE) == count

    await eventually(reached, timeout=30, what=f"{count} messages in the parking lot")


async def parked_jobs(api: Client) -> list[str]:
    body = await (await api.get("/api/queues/dead")).json()
    assert body["available"] is True, body
    return [message["job_id"] for message in body["messages"]]


async def enqueue_failing(api: Client, n: int) -> list[str]:
    ids = []
    for index in range(n):
        response = await api.post("/api/jobs", json={"kind": "test.permanent", "args": {"n": index}})
        assert response.status == 202
        ids.append((await response.json())["id"])
    return ids


@pytest.mark.both_queue_types
async def test_a_requeued_or_deleted_job_takes_its_parked_copy_with_it(
    api: Client, env: TestEnvironment, start_worker: StartWorker
) -> None:
    await start_worker()
    first, second, third = await enqueue_failing(api, 3)
    await parked(env, 3)

    assert (await api.post(f"/api/jobs/{first}/requeue")).status == 200
    # Its old copy is gone at once; it fails again and parks one new copy, never two.
    await parked(env, 3)
    assert sorted(await parked_jobs(api)) == sorted([first, second, third])

    assert (await api.post(f"/api/jobs/{second}/delete")).status == 200
    await parked(env, 2)
    response = await api.post("/api/jobs/bulk-requeue", json={"ids": [third]})
    assert (await response.json())["ids"] == [third]
    await parked(env, 2)
    assert sorted(await parked_jobs(api)) == sorted([first, third])


async def test_copies_of_succeeded_jobs_are_swept(api: Client, env: TestEnvironment, runtime: Runtime) -> None:
    job = uuid.uuid4()
    await runtime.pool.execute(
        """INSERT INTO jobs (id, kind, queue, service, priority, state, max_attempts)
           VALUES ($1, 'test.noop', 'default', 'test', 5, 'succeeded', 3)""", job)
    other = uuid.uuid4()  # a copy whose job does not exist stays: it is poison worth reading
    for job_id in (job, other):
        await runtime.broker.publish_dead(Envelope(job_id, "test.noop").encode(), "failed for the test")
    await parked(env, 2)

    assert await parking_lot.forget_settled(runtime.broker, runtime.pool) == 1

    await parked(env, 1)
    assert await parked_jobs(api) == [str(other)]


@pytest.mark.both_queue_types
async def test_purge_selected_older_than_and_all_through_the_api(
    api: Client, env: TestEnvironment, runtime: Runtime
) -> None:
    for n in range(4):
        await runtime.broker.publish_dead(f"not json {n}".encode(), f"poison {n}")
    await parked(env, 4)
    listed = (await (await api.get("/api/queues/dead")).json())["messages"]
    assert all(message["id"] and message["parked_at"] for message in listed)

    for body in ({}, {"all": False}, {"all": True, "older_than_seconds": 5}, {"ids": []}):
        response = await api.post("/api/queues/dead/purge", json=body)
        assert response.status == 422, (body, await response.text())
    await parked(env, 4)

    response = await api.post("/api/queues/dead/purge", json={"ids": [listed[1]["id"], listed[2]["id"]]})
    assert await response.json() == {"removed": 2}
    assert [message["reason"] for message in (await (await api.get("/api/queues/dead")).json())["messages"]] == [
        "poison 0", "poison 3"]

    # Kept copies survive many sweeps, in order, with their ids: on a quorum queue a returned message would
    # count toward the delivery limit (20 by default) and be dropped.
    for _ in range(25):
        response = await api.post("/api/queues/dead/purge", json={"older_than_seconds": 3600})
        assert await response.json() == {"removed": 0}
    kept = (await (await api.get("/api/queues/dead")).json())["messages"]
    assert [(message["id"], message["reason"]) for message in kept] == [
        (listed[0]["id"], "poison 0"), (listed[3]["id"], "poison 3")]
    response = await api.post("/api/queues/dead/purge", json={"all": True})
    assert await response.json() == {"removed": 2}
    await parked(env, 0)
