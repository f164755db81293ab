"""Continuations and batches through workers and schedulers: kept in Postgres, promoted by the scheduler."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from shared.client import JobSpec
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment
from tests.support.kinds import gate, test_registry
from tests.support.scheduler import StartScheduler, start_scheduler_fixture  # noqa: F401  (fixture)
from tests.support.waiting import eventually

Client = TestClient[Any, Any]


async def state_of(runtime: Runtime, job_id: uuid.UUID, state: str, timeout: float = 30) -> asyncpg.Record:
    async def probe() -> asyncpg.Record | None:
        row = await runtime.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        return row if row is not None and row["state"] == state else None

    return await eventually(probe, timeout=timeout, what=f"job {job_id} to be {state}")


async def first_at(runtime: Runtime, job_id: uuid.UUID, state: str) -> Any:
    return await runtime.pool.fetchval(
        "SELECT min(created_at) FROM job_states WHERE job_id = $1 AND state = $2", job_id, state)


async def test_a_continuation_runs_after_its_parent_succeeded_across_restarts(
    runtime: Runtime, start_worker: StartWorker, start_scheduler: StartScheduler
) -> None:
    parent = await runtime.client.enqueue("test.noop", {"n": 1})
    assert parent is not None
    child = await runtime.client.enqueue("test.noop", {"n": 2}, after=parent.id)
    assert child is not None and child.state.value == "awaiting"

    first_scheduler = await start_scheduler()
    first_scheduler.stop_event.set()  # a scheduler came and went: nothing to promote yet
    await first_scheduler.task
    worker = await start_worker()
    await state_of(runtime, parent.id, "succeeded")
    promoted = await state_of(runtime, child.id, "scheduled")  # due now, waiting for a scheduler
    assert promoted["state_reason"] == f"parent {parent.id} succeeded"
    worker.set()  # the worker goes too, before the continuation could run

    await start_scheduler()
    await start_worker()
    await state_of(runtime, child.id, "succeeded")
    assert await first_at(runtime, child.id, "processing") > await first_at(runtime, parent.id, "succeeded")


async def test_a_continuation_of_a_failed_parent_is_skipped_unless_it_waits_for_any_end(
    runtime: Runtime, start_worker: StartWorker, start_scheduler: StartScheduler
) -> None:
    await start_scheduler()
    parent = await runtime.client.enqueue("test.permanent", {})
    assert parent is not None
    on_success = await runtime.client.enqueue("test.noop", {}, after=parent.id)
    on_any_end = await runtime.client.enqueue("test.noop", {"n": 1}, after=parent.id, on="finished")
    chained = await runtime.client.enqueue("test.noop", {"n": 2}, after=on_success.id if on_success else None)
    assert on_success is not None and on_any_end is not None and chained is not None
    await start_worker()

    skipped = await state_of(runtime, on_success.id, "skipped")
    assert skipped["state_reason"] == (f"skipped: parent {parent.id} failed, and this job runs only after success")
    assert skipped["attempt"] == 0
    await state_of(runtime, on_any_end.id, "succeeded")
    assert (await state_of(runtime, chained.id, "skipped"))["state_reason"].startswith(
        f"skipped: parent {on_success.id} skipped")
    # A continuation of a job that already ended is decided at once.
    late = await runtime.client.enqueue("test.noop", {}, after=parent.id)
    assert late is not None and late.state.value == "skipped"


async def test_a_batch_callback_runs_once_when_the_last_children_finish_together_on_different_workers(
    runtime: Runtime, start_worker: StartWorker, start_scheduler: StartScheduler
) -> None:
    await start_scheduler()
    for _ in range(3):
        await start_worker(concurrency=4)
    name = f"batch-{uuid.uuid4().hex[:8]}"
    batches = [await runtime.client.enqueue_batch([JobSpec("test.gate", {"gate": name}) for _ in range(3)],
                                                  then=JobSpec("test.noop", {"n": n}))
               for n in range(4)]
    children = [job_id for batch in batches for job_id in batch.job_ids]

    async def all_running() -> bool:
        count = await runtime.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND state = 'processing'", children)
        return bool(count == len(children))

    await eventually(all_running, what="every child to be running")
    workers = await runtime.pool.fetchval("SELECT count(DISTINCT worker) FROM jobs WHERE id = ANY($1::uuid[])",
                                          children)
    gate(name).set()  # every child of every batch finishes at the same moment
    for batch in batches:
        assert batch.callback_id is not None
        await state_of(runtime, batch.callback_id, "succeeded")
        runs = await runtime.pool.fetchval(
            "SELECT count(*) FROM job_states WHERE job_id = $1 AND state = 'processing'", batch.callback_id)
        promotions = await runtime.pool.fetchval(
            "SELECT count(*) FROM job_states WHERE job_id = $1 AND state = 'scheduled'", batch.callback_id)
        row = await runtime.pool.fetchrow("SELECT * FROM batches WHERE id = $1", batch.id)
        assert (runs, promotions, row["succeeded"], row["failed"], row["total"]) == (1, 1, 3, 0, 3)
        last_child = await runtime.pool.fetchval(
            "SELECT max(created_at) FROM job_states WHERE job_id = ANY($1::uuid[]) AND state = 'succeeded'",
            batch.job_ids)
        assert await first_at(runtime, batch.callback_id, "processing") > last_child
    print(f"batches: 4 callbacks ran once each; 12 children finished together on {workers} workers")
    assert workers >= 2


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[Client]:
    async with platform_api(env, registry=test_registry()) as client:
        yield client


async def test_continuations_and_batches_over_http(api: Client, runtime: Runtime) -> None:
    parent = await (await api.post("/api/jobs", json={"kind": "test.noop", "args": {}, "delay_seconds": 600})).json()
    response = await api.post("/api/jobs", json={"kind": "test.noop", "args": {}, "after": parent["id"],
                                                 "on": "finished"})
    assert response.status == 202, await response.text()
    child = await response.json()
    assert (child["state"], child["after_id"], child["after_on"]) == ("awaiting", parent["id"], "finished")
    missing = await api.post("/api/jobs", json={"kind": "test.noop", "after": str(uuid.uuid4())})
    assert missing.status == 422 and (await missing.json())["error"]["details"][0]["field"] == "after"

    response = await api.post("/api/batches", json={"jobs": [{"kind": "test.noop", "args": {"n": 1}},
                                                             {"kind": "test.log", "args": {"message": "x"}}],
                                                    "then": {"kind": "test.noop"}})
    assert response.status == 202, await response.text()
    batch = await response.json()
    assert (batch["total"], batch["succeeded"], batch["failed"], batch["pending"]) == (2, 0, 0, 2)
    callback = await (await api.get(f"/api/jobs/{batch['callback_id']}")).json()
    assert (callback["state"], callback["after_batch_id"]) == ("awaiting", batch["id"])
    assert (await (await api.get(f"/api/batches/{batch['id']}")).json())["pending"] == 2
    assert (await api.get(f"/api/batches/{uuid.uuid4()}")).status == 404

    bad = await api.post("/api/batches", json={"jobs": [{"kind": "test.noop"}, {"kind": "test.noop",
                                                                                "args": {"n": "x"}}]})
    assert bad.status == 422
    assert (await bad.json())["error"]["details"][0]["field"] == "jobs.1.args.n"
    assert await runtime.pool.fetchval("SELECT count(*) FROM batches") == 1  # the refused one wrote nothing
