"""Cancel (issue 9): a running job stopped through its lease, queued ones never run, bulk by filter, dashboard."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.jobs import QueueClass
from shared.messaging.consumer import JobContext
from shared.messaging.envelope import Envelope
from shared.registry import JobKind
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment
from tests.support.kinds import TEST_HANDLERS, TEST_SERVICE, ObservedArgs, test_registry
from tests.support.live_api import browser_session, csrf_from, running_api
from tests.support.observed import record
from tests.support.waiting import eventually

Client = TestClient[Any, Any]
HEARTBEAT = 0.25  # the lease renewal that notices a cancel comes at most this long after it


async def cooperative(ctx: JobContext, args: ObservedArgs) -> None:
    """Records whether the handler saw `context.cancelled` when it was stopped."""
    record(args.log, str(ctx.job_id), ctx.attempt, "start")
    try:
        await asyncio.sleep(args.seconds)
        record(args.log, str(ctx.job_id), ctx.attempt, "end")
    except asyncio.CancelledError:
        record(args.log, str(ctx.job_id), ctx.attempt, "flag set" if ctx.cancelled.is_set() else "flag unset")
        raise


REGISTRY = test_registry(JobKind("test.cooperative", ObservedArgs, TEST_SERVICE, QueueClass.DEFAULT,
                                 timeout_seconds=120))
HANDLERS = {**TEST_HANDLERS, "test.cooperative": cooperative}


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[Client]:
    async with platform_api(env, registry=REGISTRY) as client:
        yield client


def events(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def seen(log: Path, *, started: bool) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    """A probe for the recorded starts (started=True) or ends of the handler's runs."""
    async def probe() -> list[dict[str, Any]]:
        return [event for event in events(log) if (event["event"] == "start") is started]
    return probe


async def post(api: Client, path: str, status: int = 200, **options: Any) -> dict[str, Any]:
    response = await api.post(path, **options)
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_running_30_s_job_is_cancelled_within_a_second_and_never_runs_again(
    api: Client, runtime: Runtime, start_worker: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    await start_worker(registry=REGISTRY, handlers=HANDLERS, heartbeat_seconds=HEARTBEAT, job_lease_seconds=3.0)
    job = await post(api, "/api/jobs", 202, json={"kind": "test.cooperative",
                                                  "args": {"seconds": 30, "log": str(log)}})
    await eventually(seen(log, started=True), what="the handler to start")

    asked = time.monotonic()
    cancelled = await post(api, f"/api/jobs/{job['id']}/cancel")
    assert cancelled["state"] == "cancelled"
    assert cancelled["cancelled_by"].startswith("operator via loopback from ")
    stopped = await eventually(seen(log, started=False), timeout=10, what="the handler to be stopped")
    took = time.monotonic() - asked
    print(f"cancel of a running job: handler stopped {took:.2f}s after the request (heartbeat {HEARTBEAT}s)")
    assert [e["event"] for e in stopped] == ["flag set"]  # stopped, not finished, and told why
    assert took < 1.0

    # A copy of its message (a redelivery, a sweeper's republish) is dropped, never run.
    await runtime.broker.publish_job(TEST_SERVICE, Envelope(uuid.UUID(job["id"]), "test.cooperative", 1), 5)
    await eventually(lambda: runtime.pool.fetchval(
        "SELECT count FROM dropped_deliveries WHERE service = 'test' AND reason = 'finished'"),
        what="the copy to be dropped")
    assert [e["event"] for e in events(log)] == ["start", "flag set"]
    detail = (await (await api.get(f"/api/jobs/{job['id']}")).json())
    assert detail["state"] == "cancelled" and detail["attempt"] == 1
    assert [step["state"] for step in detail["history"]] == ["enqueued", "processing", "cancelled"]
    assert "cancelled by operator" in detail["history"][-1]["reason"]


async def test_queued_jobs_are_cancelled_before_they_run_and_requeue_brings_one_back(
    api: Client, runtime: Runtime, start_worker: StartWorker
) -> None:
    scheduled = await post(api, "/api/jobs", 202, json={"kind": "test.noop", "args": {}, "delay_seconds": 3600})
    enqueued = await post(api, "/api/jobs", 202, json={"kind": "test.noop", "args": {"n": 2}})  # no worker yet
    for job in (scheduled, enqueued):
        assert (await post(api, f"/api/jobs/{job['id']}/cancel"))["state"] == "cancelled"
    await start_worker()
    await eventually(lambda: runtime.pool.fetchval(
        "SELECT count FROM dropped_deliveries WHERE service = 'test' AND reason = 'finished'"),
        what="the enqueued job's message to be dropped")
    assert await runtime.pool.fetchval("SELECT state FROM jobs WHERE id = $1", uuid.UUID(enqueued["id"])) \
        == "cancelled"

    again = await api.post(f"/api/jobs/{enqueued['id']}/cancel")
    assert again.status == 409
    assert "cancel needs one of" in (await again.json())["error"]["message"]
    assert (await api.post(f"/api/jobs/{uuid.uuid4()}/cancel")).status == 404

    requeued = await post(api, f"/api/jobs/{enqueued['id']}/requeue")
    assert requeued["state"] == "enqueued" and requeued["cancelled_by"] is None

    async def succeeded() -> bool:
        state = await runtime.pool.fetchval("SELECT state FROM jobs WHERE id = $1", uuid.UUID(enqueued["id"]))
        return bool(state == "succeeded")

    await eventually(succeeded, what="the requeued job to run")


async def test_bulk_cancel_by_filter_leaves_other_states_alone(api: Client, runtime: Runtime) -> None:
    waiting = [await post(api, "/api/jobs", 202, json={"kind": "test.noop", "args": {"n": n}, "delay_seconds": 600})
               for n in range(3)]
    other = await post(api, "/api/jobs", 202, json={"kind": "test.log", "args": {"message": "x"},
                                                    "delay_seconds": 600})
    result = await post(api, "/api/jobs/bulk-cancel", json={"state": "scheduled", "kind": "test.noop"})
    assert result["changed"] == 3 and result["skipped"] == 0
    assert sorted(result["ids"]) == sorted(job["id"] for job in waiting)
    assert await runtime.pool.fetchval("SELECT state FROM jobs WHERE id = $1", uuid.UUID(other["id"])) == "scheduled"
    by_ids = await post(api, "/api/jobs/bulk-cancel", json={"ids": [other["id"], waiting[0]["id"]]})
    assert by_ids["changed"] == 1 and by_ids["skipped"] == 1


async def test_the_dashboard_cancels_from_the_job_page_and_in_bulk(env: TestEnvironment, runtime: Runtime) -> None:
    async with running_api(env.settings(), test_registry()) as port:
        base = f"http://127.0.0.1:{port}"
        async with browser_session(Origin=base) as browser:
            one = await runtime.client.enqueue("test.noop", {}, delay=3600)
            two = await runtime.client.enqueue("test.noop", {"n": 1}, delay=3600)
            assert one is not None and two is not None
            job_page = f"{base}/jobs/job/{one.id}"
            async with browser.get(job_page) as response:
                html = await response.text()
            assert "/cancel" in html and "Cancel this job?" in html
            async with browser.post(f"{job_page}/cancel", data={}, allow_redirects=False) as response:
                assert response.status == 403  # no CSRF token
            async with browser.post(f"{job_page}/cancel", data={"csrf_token": csrf_from(html)},
                                    allow_redirects=False) as response:
                assert response.status == 303
                location = response.headers["Location"]
            async with browser.get(base + location) as response:
                shown = await response.text()
            assert "Job cancelled" in shown and "Cancelled by" in shown
            assert await runtime.pool.fetchval("SELECT state FROM jobs WHERE id = $1", one.id) == "cancelled"

            list_page = f"{base}/jobs/list?state=scheduled"
            async with browser.get(list_page) as response:
                html = await response.text()
            assert "Cancel all matching" in html
            async with browser.post(f"{base}/jobs/bulk", data={"do": "cancel-matching", "state": "scheduled",
                                                                "csrf_token": csrf_from(html)},
                                    allow_redirects=False) as response:
                assert response.status == 303, await response.text()
            assert await runtime.pool.fetchval("SELECT state FROM jobs WHERE id = $1", two.id) == "cancelled"
