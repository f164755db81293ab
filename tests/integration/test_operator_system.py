"""/api/stats, /api/servers, /api/queues and the parking-lot peek, against real Postgres and RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.api_probe import platform_api
from tests.support.environment import Management, TestEnvironment
from tests.support.kinds import test_registry
from tests.support.waiting import eventually

Client = TestClient[Any, Any]


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[Client]:
    async with platform_api(env, registry=test_registry()) as client:
        yield client


async def get_json(api: Client, path: str) -> Any:
    response = await api.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_stats_count_jobs_by_state_and_live_servers(api: Client, start_worker: StartWorker) -> None:
    empty = await get_json(api, "/api/stats")
    assert empty == {"enqueued": 0, "scheduled": 0, "processing": 0, "succeeded": 0, "failed": 0,
                     "deleted": 0, "retrying": 0, "cancelled": 0, "awaiting": 0,
                     "skipped": 0, "servers": 0}
    for n in range(3):
        await api.post("/api/jobs", json={"kind": "test.noop", "args": {"n": n}, "delay_seconds": 600})
    await api.post("/api/jobs", json={"kind": "test.permanent", "args": {}})
    assert (await get_json(api, "/api/stats"))["scheduled"] == 3

    await start_worker()

    async def settled() -> dict[str, Any] | None:
        stats: dict[str, Any] = await get_json(api, "/api/stats")
        return stats if stats["failed"] == 1 and stats["servers"] == 1 else None

    stats = await eventually(settled, what="the permanent failure and one live server")
    assert (stats["scheduled"], stats["succeeded"], stats["enqueued"]) == (3, 0, 0)


async def test_servers_show_live_workers_and_mark_dead_ones(
    api: Client, runtime: Runtime, start_worker: StartWorker
) -> None:
    await runtime.pool.execute(
        """INSERT INTO servers (id, service, host, pid, queues, concurrency, started_at, last_heartbeat)
           VALUES ('test:gone:1', 'test', 'gone', 1, '{jobs.test}', 4, now() - interval '1 hour',
                   now() - interval '10 minutes')"""
    )
    await start_worker(concurrency=3)

    async def both() -> list[dict[str, Any]] | None:
        servers: list[dict[str, Any]] = await get_json(api, "/api/servers")
        return servers if len(servers) == 2 else None

    servers = {server["host"] == "gone": server for server in await eventually(both, what="two servers")}
    assert servers[True]["dead"] is True
    assert servers[False]["dead"] is False
    assert (servers[False]["service"], servers[False]["queues"], servers[False]["concurrency"]) == (
        "test", ["jobs.test"], 3
    )


async def test_queues_show_depth_consumers_and_the_parking_lot(
    api: Client, start_worker: StartWorker
) -> None:
    for n in range(3):
        await api.post("/api/jobs", json={"kind": "test.noop", "args": {"n": n}})

    async def queue(name: str, predicate: Any) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            body = await get_json(api, "/api/queues")
            assert body["available"] is True, body
            found = {item["name"]: item for item in body["queues"]}.get(name)
            seen.append(found)
            return found if found is not None and predicate(found) else None

        seen: list[Any] = []

        # The management API refreshes its numbers every few seconds.
        try:
            return await eventually(probe, timeout=60, interval=0.5, what=f"{name} in /api/queues")
        except AssertionError:
            raise AssertionError(f"{name} never matched; last seen {seen[-1:]}") from None

    waiting = await queue("jobs.test", lambda item: item["messages"] == 3)
    assert (waiting["role"], waiting["consumers"]) == ("work", 0)
    body = await get_json(api, "/api/queues")
    roles = {item["name"]: item["role"] for item in body["queues"]}
    assert roles["jobs.dead"] == "dead" and roles["jobs.delay.60s"] == "delay"

    await start_worker()
    await api.post("/api/jobs", json={"kind": "test.permanent", "args": {"n": 1}})
    await queue("jobs.test", lambda item: item["consumers"] == 1)
    await queue("jobs.dead", lambda item: item["messages"] == 1)

    parked = await get_json(api, "/api/queues/dead")
    assert parked["available"] is True
    [message] = parked["messages"]
    assert message["kind"] == "test.permanent" and "this can never work" in (message["reason"] or "")
    # Peeking leaves the message where it was.
    assert len((await get_json(api, "/api/queues/dead"))["messages"]) == 1


async def test_an_unreachable_management_api_is_a_note_not_an_error(
    env: TestEnvironment, management: Management
) -> None:
    unreachable = "http://guest:guest@127.0.0.1:9/"
    async with platform_api(env, test_registry(), rabbitmq_management_url=unreachable) as client:
        response = await client.get("/api/queues")
        assert response.status == 200
        body = await response.json()
        assert body["available"] is False and "unavailable" in body["note"] and body["queues"] == []
        parked = await (await client.get("/api/queues/dead")).json()
        assert parked["available"] is False
