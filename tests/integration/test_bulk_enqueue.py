"""JobClient.enqueue_many and POST /api/jobs/batch: one insert, one transaction, publishes confirmed in windows."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from shared import client as client_module
from shared.client import BatchRefused, EnqueuedJob, IdempotencyConflict, JobSpec
from shared.registry import InvalidJobArguments, UnknownJobKind
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.api_probe import platform_api, queue_depth
from tests.support.environment import TestEnvironment
from tests.support.kinds import TEST_SERVICE, test_registry
from tests.support.waiting import eventually


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env, registry=test_registry()) as client:
        yield client


async def counts(db: asyncpg.Connection) -> tuple[int, int]:
    return await db.fetchval("SELECT count(*) FROM jobs"), await db.fetchval("SELECT count(*) FROM job_states")


async def test_enqueue_many_writes_publishes_and_marks_every_job_in_windows(
    runtime: Runtime, env: TestEnvironment, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "PUBLISH_WINDOW", 7)  # several windows and a partial last one
    jobs = await runtime.client.enqueue_many([("test.noop", {"n": n}) for n in range(50)])

    assert [job.created for job in jobs] == [True] * 50
    rows = {row["id"]: row for row in await db.fetch("SELECT id, args, state, published_at FROM jobs")}
    assert [rows[job.id]["args"] for job in jobs] == [f'{{"n": {n}}}' for n in range(50)]  # results in order
    assert {row["state"] for row in rows.values()} == {"enqueued"}
    await eventually(lambda: db.fetchval("SELECT count(*) = 50 FROM jobs WHERE published_at IS NOT NULL"),
                     timeout=10, what="every publish stamped")
    assert await db.fetchval("SELECT count(*) FROM job_states WHERE state = 'enqueued'") == 50
    assert await queue_depth(env, TEST_SERVICE) == 50


async def test_enqueue_many_decides_scheduled_or_enqueued_per_item_and_only_publishes_the_enqueued(
    runtime: Runtime, env: TestEnvironment, db: asyncpg.Connection
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    jobs = await runtime.client.enqueue_many([
        JobSpec("test.noop", {"n": 1}),
        JobSpec("test.noop", {"n": 2}, run_at=later),
        JobSpec("test.noop", {"n": 3}, delay=3600),
        JobSpec("test.log", {"message": "hi"}, queue="critical", max_attempts=7),
    ])
    assert [job.state.value for job in jobs] == ["enqueued", "scheduled", "scheduled", "enqueued"]
    last = await db.fetchrow("SELECT queue, priority, max_attempts FROM jobs WHERE id = $1", jobs[3].id)
    assert (last["queue"], last["max_attempts"]) == ("critical", 7)
    assert await queue_depth(env, TEST_SERVICE) == 2


async def test_a_bad_item_refuses_the_whole_batch_naming_each_and_writes_nothing(
    runtime: Runtime, env: TestEnvironment, db: asyncpg.Connection
) -> None:
    with pytest.raises(BatchRefused) as refused:
        await runtime.client.enqueue_many([
            ("test.noop", {"n": 1}), ("no.such.kind", {}), ("test.noop", {"n": "many"}),
            JobSpec("test.noop", run_at=datetime(2030, 1, 1)),  # naive
        ])
    assert [(index, type(error)) for index, error in refused.value.errors] == [
        (1, UnknownJobKind), (2, InvalidJobArguments), (3, ValueError)]
    assert await counts(db) == (0, 0)
    assert await queue_depth(env, TEST_SERVICE) == 0


async def test_idempotency_keys_per_item_answer_existing_jobs_and_refuse_other_content(
    runtime: Runtime, env: TestEnvironment, db: asyncpg.Connection
) -> None:
    first = await runtime.client.enqueue_many([JobSpec("test.noop", {"n": 1}, idempotency_key="a")])
    again = await runtime.client.enqueue_many([
        JobSpec("test.noop", {"n": 1}, idempotency_key="a"),  # the existing job
        JobSpec("test.noop", {"n": 2}, idempotency_key="b"),
        JobSpec("test.noop", {"n": 2}, idempotency_key="b"),  # a repeat inside the batch
    ])
    assert [(job.id == first[0].id, job.created) for job in again[:1]] == [(True, False)]
    assert again[1].created and not again[2].created and again[2].id == again[1].id
    assert await counts(db) == (2, 2)
    assert await queue_depth(env, TEST_SERVICE) == 2  # nothing published twice

    with pytest.raises(BatchRefused) as refused:
        await runtime.client.enqueue_many([
            JobSpec("test.noop", {"n": 3}, idempotency_key="c"),  # would be new: rolled back with the batch
            JobSpec("test.noop", {"n": 99}, idempotency_key="a"),
        ])
    assert [(index, type(error)) for index, error in refused.value.errors] == [(1, IdempotencyConflict)]
    assert await counts(db) == (2, 2)


async def test_enqueue_many_in_a_client_transaction_publishes_after_commit_and_not_after_rollback(
    runtime: Runtime, env: TestEnvironment, db: asyncpg.Connection
) -> None:
    async with runtime.pool.acquire() as connection:
        with pytest.raises(RuntimeError):
            async with runtime.client.transaction(connection):
                await runtime.client.enqueue_many([("test.noop", {"n": 1})], connection=connection)
                raise RuntimeError("the caller's change failed")
        assert await counts(db) == (0, 0)
        async with runtime.client.transaction(connection):
            await runtime.client.enqueue_many([("test.noop", {"n": n}) for n in range(3)], connection=connection)
            assert await queue_depth(env, TEST_SERVICE) == 0  # not before the commit
    assert await queue_depth(env, TEST_SERVICE) == 3
    await eventually(lambda: db.fetchval("SELECT count(*) = 3 FROM jobs WHERE published_at IS NOT NULL"),
                     timeout=10, what="the three publishes stamped")


async def test_batch_over_http_runs_every_job_with_its_full_history(
    api: TestClient[Any, Any], start_worker: StartWorker, db: asyncpg.Connection
) -> None:
    await start_worker()
    response = await api.post("/api/jobs/batch", json={"jobs": [
        {"kind": "test.noop", "args": {"n": n}, "idempotency_key": f"k{n}"} for n in range(20)]})
    assert response.status == 202, await response.text()
    body = await response.json()
    assert (body["created"], body["existing"]) == (20, 0)
    assert [item["index"] for item in body["items"]] == list(range(20))
    assert [item["idempotency_key"] for item in body["items"]] == [f"k{n}" for n in range(20)]

    async def all_succeeded() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM jobs WHERE state = 'succeeded'") == 20)

    await eventually(all_succeeded, what="the batch to run")
    histories = await db.fetch("SELECT array_agg(state ORDER BY id) AS h FROM job_states GROUP BY job_id")
    assert [row["h"] for row in histories] == [["enqueued", "processing", "succeeded"]] * 20

    repeat = await api.post("/api/jobs/batch", json={"jobs": [{"kind": "test.noop", "args": {"n": 3},
                                                               "idempotency_key": "k3"}]})
    assert repeat.status == 200
    assert (await repeat.json())["items"][0]["id"] == body["items"][3]["id"]


async def test_batch_over_http_refuses_naming_each_bad_item_and_writes_nothing(
    api: TestClient[Any, Any], env: TestEnvironment, db: asyncpg.Connection
) -> None:
    response = await api.post("/api/jobs/batch", json={"jobs": [
        {"kind": "test.noop", "args": {"n": 1}}, {"kind": "no.such"}, {"kind": "test.noop", "args": {"n": "x"}}]})
    assert response.status == 422
    fields = [detail["field"] for detail in (await response.json())["error"]["details"]]
    assert fields == ["jobs.1.kind", "jobs.2.args.n"]

    too_many = await api.post("/api/jobs/batch", json={"jobs": [{"kind": "test.noop"}] * 1001})
    assert too_many.status == 422
    empty = await api.post("/api/jobs/batch", json={"jobs": []})
    assert empty.status == 422

    await api.post("/api/jobs/batch", json={"jobs": [{"kind": "test.noop", "args": {"n": 1}, "idempotency_key": "a"}]})
    conflict = await api.post("/api/jobs/batch", json={"jobs": [
        {"kind": "test.noop", "args": {"n": 5}}, {"kind": "test.noop", "args": {"n": 2}, "idempotency_key": "a"}]})
    assert conflict.status == 409
    assert [detail["field"] for detail in (await conflict.json())["error"]["details"]] == ["jobs.1.idempotency_key"]
    assert await counts(db) == (1, 1)
    assert await queue_depth(env, TEST_SERVICE) == 1


async def test_batch_is_in_the_openapi_document(api: TestClient[Any, Any]) -> None:
    document = await (await api.get("/api/openapi.json")).json()
    operation = document["paths"]["/api/jobs/batch"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobBatchRequest"}
    assert {"200", "202", "409", "422"} <= set(operation["responses"])
    assert document["components"]["schemas"]["JobBatchRequest"]["properties"]["jobs"]["maxItems"] == 1000


async def test_concurrent_enqueues_share_a_commit_yet_each_gets_its_own_answer(
    runtime: Runtime, env: TestEnvironment, db: asyncpg.Connection
) -> None:
    await runtime.client.enqueue("test.noop", {"n": 0}, idempotency_key="taken")
    calls = [runtime.client.enqueue("test.noop", {"n": n}) for n in range(1, 30)]
    calls += [
        runtime.client.enqueue("test.noop", {"n": 99}, idempotency_key="taken"),  # other content
        runtime.client.enqueue("test.noop", {"n": 0}, idempotency_key="taken"),  # the same: the existing job
        # A key too large for its index: Postgres refuses the grouped statement, and only this caller fails.
        runtime.client.enqueue("test.noop", {"n": 5}, idempotency_key=secrets.token_hex(20_000)),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(result, EnqueuedJob) and result.created for result in results[:29]), results[:29]
    assert isinstance(results[29], IdempotencyConflict)
    assert isinstance(results[30], EnqueuedJob) and not results[30].created
    assert isinstance(results[31], asyncpg.PostgresError)
    assert await counts(db) == (30, 30)
    assert await queue_depth(env, TEST_SERVICE) == 30
