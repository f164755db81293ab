"""Per-kind limits through running workers and a scheduler: concurrency across workers, a cluster-wide rate."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from shared.db import limits as limit_queries
from shared.jobs import QueueClass
from shared.limits import KindLimits
from shared.registry import JobKind
from shared.runtime import Runtime, open_runtime
from shared.settings import Settings
from tests.conftest import StartWorker
from tests.support.kinds import TEST_HANDLERS, TEST_SERVICE, NoopArgs, ObservedArgs, test_registry
from tests.support.live_api import browser_session, running_api
from tests.support.scheduler import StartScheduler, start_scheduler_fixture  # noqa: F401  (fixture)
from tests.support.waiting import eventually

REGISTRY = test_registry(
    JobKind("test.limited", ObservedArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=30,
            limits=KindLimits(concurrency=2)),
    JobKind("test.rated", NoopArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=30,
            limits=KindLimits(rate=20, per_seconds=1)),
)
HANDLERS = {**TEST_HANDLERS, "test.limited": TEST_HANDLERS["test.observed"], "test.rated": TEST_HANDLERS["test.noop"]}


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """A runtime that knows the limited test kinds, to enqueue them."""
    async with open_runtime(settings, REGISTRY) as opened:
        yield opened


async def all_succeed(runtime: Runtime, ids: list[uuid.UUID], timeout: float) -> None:
    async def done() -> bool:
        count = await runtime.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND state = 'succeeded'", ids)
        return bool(count == len(ids))

    await eventually(done, timeout=timeout, interval=0.5, what=f"{len(ids)} jobs to succeed")


async def runs(runtime: Runtime, ids: list[uuid.UUID]) -> list[tuple[datetime, datetime]]:
    """(start, end) of every run, from the history: a `processing` row to the job's next row."""
    rows = await runtime.pool.fetch(
        """SELECT created_at AS started,
                  lead(created_at) OVER (PARTITION BY job_id ORDER BY id) AS ended, state
             FROM job_states WHERE job_id = ANY($1::uuid[])""", ids)
    return [(row["started"], row["ended"]) for row in rows if row["state"] == "processing"]


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant: touching is not overlapping
        running += step
        peak = max(peak, running)
    return peak


async def test_a_kind_limited_to_two_never_runs_three_at_once_on_three_workers(
    runtime: Runtime, start_worker: StartWorker, start_scheduler: StartScheduler, tmp_path: Path
) -> None:
    await start_scheduler()
    for _ in range(3):
        await start_worker(registry=REGISTRY, handlers=HANDLERS)
    log = str(tmp_path / "runs.jsonl")
    ids = []
    for _ in range(50):
        job = await runtime.client.enqueue("test.limited", {"seconds": 0.2, "log": log})
        assert job is not None
        ids.append(job.id)
    await all_succeed(runtime, ids, timeout=120)

    intervals = await runs(runtime, ids)
    held = await runtime.pool.fetchval(
        """SELECT count(*) FROM job_states
            WHERE job_id = ANY($1::uuid[]) AND state = 'scheduled' AND reason LIKE 'waiting for limit%'""", ids)
    workers = await runtime.pool.fetchval("SELECT count(DISTINCT worker) FROM jobs WHERE id = ANY($1::uuid[])", ids)
    peak = most_at_once(intervals)
    print(f"concurrency limit 2: at most {peak} at once over {len(intervals)} runs on {workers} workers; "
          f"{held} hold-backs")
    assert len(intervals) == 50 and peak == 2
    assert held > 0 and workers >= 2
    # Held back, never counted as an attempt.
    assert await runtime.pool.fetchval("SELECT max(attempt) FROM jobs WHERE id = ANY($1::uuid[])", ids) == 1


async def test_a_rate_of_20_per_second_holds_over_500_jobs_on_two_workers(
    runtime: Runtime, start_worker: StartWorker, start_scheduler: StartScheduler
) -> None:
    await start_scheduler()
    for _ in range(2):
        await start_worker(registry=REGISTRY, handlers=HANDLERS)
    ids = []
    for n in range(500):
        job = await runtime.client.enqueue("test.rated", {"n": n})
        assert job is not None
        ids.append(job.id)
    await all_succeed(runtime, ids, timeout=120)

    starts = sorted(start for start, _ in await runs(runtime, ids))
    seconds = (starts[-1] - starts[0]).total_seconds()
    rate = (len(starts) - 1) / seconds
    busiest = max(sum(1 for other in starts[i:i + 40] if (other - start).total_seconds() < 1.0)
                  for i, start in enumerate(starts))
    workers = await runtime.pool.fetchval("SELECT count(DISTINCT worker) FROM jobs WHERE id = ANY($1::uuid[])", ids)
    print(f"rate 20/s: {len(starts)} starts in {seconds:.2f}s = {rate:.2f}/s on {workers} workers; "
          f"busiest second {busiest}")
    assert len(starts) == 500 and workers == 2
    assert 18.0 <= rate <= 22.0


async def test_a_held_back_job_shows_waiting_for_limit_on_the_dashboard_and_in_the_api(
    runtime: Runtime, settings: Settings
) -> None:
    runner = await runtime.client.enqueue("test.limited", {"seconds": 1, "log": "/dev/null"})
    waiter = await runtime.client.enqueue("test.limited", {"seconds": 1, "log": "/dev/null"})
    assert runner is not None and waiter is not None
    await runtime.pool.execute(
        "UPDATE jobs SET state = 'processing', worker = 'w', lease_expires_at = now() + interval '1 minute' "
        "WHERE id = $1", runner.id)
    claimed = await limit_queries.claim_limited(runtime.pool, "other", waiter.id, 0, "test.limited",
                                                KindLimits(concurrency=1), lease_seconds=30)
    assert isinstance(claimed, limit_queries.HeldBack) and claimed.limit == "concurrency"
    async with running_api(settings, REGISTRY) as port, browser_session() as browser:
        base = f"http://127.0.0.1:{port}"
        for url in (f"{base}/jobs/list?state=scheduled", f"{base}/jobs/job/{waiter.id}"):
            async with browser.get(url) as response:
                html = await response.text()
            assert response.status == 200 and "waiting for limit" in html
            assert "1 of 1 running" in html
        async with browser.get(f"{base}/api/jobs/{waiter.id}") as response:
            body = await response.json()
    assert body["state"] == "scheduled" and body["limit_wait"] == "concurrency" and body["attempt"] == 0
