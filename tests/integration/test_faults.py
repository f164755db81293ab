"""Faults injected into the real servers and processes: no job lost, none running twice at once.

Each test counts, from Postgres and from what the handlers observed (tests.support.observed): jobs lost
(must be 0), pairs of runs of one job that overlapped in time (must be 0), and duplicates after completion
(printed: at-least-once allows them). Tests that stop a server restore it and wait until it is healthy,
whatever the outcome.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from shared.messaging.envelope import Envelope
from shared.runtime import Runtime
from tests.support import observed
from tests.support.environment import Management, TestEnvironment
from tests.support.kinds import test_registry
from tests.support.live_api import running_api
from tests.support.processes import SCHEDULER, WORKER, service_process
from tests.support.proxy import running_proxy
from tests.support.scheduler import StartScheduler, start_scheduler_fixture  # noqa: F401  (fixture)
from tests.support.servers import close_connections, postgres_stopped, rabbitmq_stopped
from tests.support.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]


async def enqueue_observed(runtime: Runtime, count: int, seconds: float, log: Path, **options: Any) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    for start in range(0, count, 100):
        jobs = await asyncio.gather(*(
            runtime.client.enqueue("test.observed", {"seconds": seconds, "log": str(log)}, **options)
            for _ in range(start, min(start + 100, count))
        ))
        ids += [job.id for job in jobs if job is not None]
    assert len(ids) == count
    return ids


async def count_where(runtime: Runtime, ids: list[uuid.UUID], condition: str) -> int:
    value: int = await runtime.pool.fetchval(
        f"SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND {condition}", ids
    )
    return value


def reaches(runtime: Runtime, ids: list[uuid.UUID], condition: str, minimum: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await count_where(runtime, ids, condition) >= minimum
    return probe


async def all_succeed(runtime: Runtime, ids: list[uuid.UUID], timeout: float = 240) -> None:
    await eventually(reaches(runtime, ids, "state = 'succeeded'", len(ids)), timeout=timeout,
                     what=f"all {len(ids)} jobs to succeed")


def worker_prefix(process: asyncio.subprocess.Process) -> str:
    return f"test:{socket.gethostname()}:{process.pid}:"


def held_by(runtime: Runtime, ids: list[uuid.UUID], process: asyncio.subprocess.Process,
            minimum: int) -> Callable[[], Awaitable[bool]]:
    return reaches(runtime, ids, f"state = 'processing' AND worker LIKE '{worker_prefix(process)}%'", minimum)


def at_least(items: list[Any], minimum: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return len(items) >= minimum
    return probe


def report(name: str, runs: list[observed.Run], *, lost: int) -> observed.Counts:
    counts = observed.count(runs)
    print(counts.report(name, lost=lost))
    return counts


async def ready(env: TestEnvironment, *processes: asyncio.subprocess.Process) -> None:
    """Wait until each worker process heartbeats (it has migrated, connected and started consuming)."""
    connection = await asyncpg.connect(env.database_url)
    try:
        for process in processes:
            async def heartbeating(process: asyncio.subprocess.Process = process) -> bool:
                assert process.returncode is None, f"worker {process.pid} exited with {process.returncode}"
                return bool(await connection.fetchval(
                    "SELECT count(*) FROM servers WHERE id LIKE $1", worker_prefix(process) + "%"))
            await eventually(heartbeating, timeout=60, what=f"worker {process.pid} to start")
    finally:
        await connection.close()


@asynccontextmanager
async def workers(env: TestEnvironment, tmp_path: Path, count: int, **overrides: Any
                  ) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """`count` (1 or 2) worker processes of the test kinds, started and heartbeating."""
    async with service_process(WORKER, env, tmp_path / "worker-1.log", **overrides) as first:
        if count == 1:
            await ready(env, first)
            yield [first]
            return
        async with service_process(WORKER, env, tmp_path / "worker-2.log", **overrides) as second:
            await ready(env, first, second)
            yield [first, second]


async def test_rabbitmq_restart_in_a_2000_job_burst_with_two_workers(
    env: TestEnvironment, runtime: Runtime, start_scheduler: StartScheduler, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    await start_scheduler(outbox_grace_seconds=1.0)
    ids = await enqueue_observed(runtime, 2000, 0.01, log)
    async with workers(env, tmp_path, 2):
        await eventually(reaches(runtime, ids, "state = 'succeeded'", 300), timeout=120,
                         what="the burst to be under way")
        async with rabbitmq_stopped():
            await asyncio.sleep(3)  # the outage itself
        await all_succeed(runtime, ids)
    lost = len(ids) - await count_where(runtime, ids, "state = 'succeeded'")
    counts = report("RabbitMQ restart", observed.runs(log), lost=lost)
    assert lost == 0 and counts.overlapping == 0 and counts.completed_jobs == len(ids)


async def test_postgres_restart_in_a_burst_answers_503_and_recovers(
    env: TestEnvironment, runtime: Runtime, start_scheduler: StartScheduler, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    await start_scheduler(outbox_grace_seconds=1.0)
    statuses: dict[int, int] = {}
    unavailable: list[tuple[dict[str, Any], str | None]] = []
    accepted: list[uuid.UUID] = []
    body = {"kind": "test.observed", "args": {"seconds": 0.05, "log": str(log)}}

    async def client(session: aiohttp.ClientSession, url: str, requests: int) -> None:
        for _ in range(requests):
            # A 503 says "try again": the client does, with the same key, so a job whose commit made it before
            # the connection broke is not enqueued twice.
            key = str(uuid.uuid4())
            while True:
                async with session.post(url, json=body, headers={"Idempotency-Key": key}) as response:
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    if response.status == 503:
                        unavailable.append((await response.json(), response.headers.get("Retry-After")))
                        await asyncio.sleep(0.2)
                        continue
                    # 200: the retry found the job its earlier, interrupted request had committed.
                    assert response.status in (200, 202), await response.text()
                    accepted.append(uuid.UUID((await response.json())["id"]))  # the same job on a retry
                    break

    async with running_api(env.settings(), test_registry()) as port, workers(env, tmp_path, 2), \
            aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/api/jobs"
        clients = [asyncio.create_task(client(session, url, 40)) for _ in range(8)]
        await eventually(at_least(accepted, 60), timeout=60, what="the burst to start")
        async with postgres_stopped():
            await eventually(at_least(unavailable, 5), timeout=30, what="the api to answer 503 during the outage")
        await asyncio.wait_for(asyncio.gather(*clients), 180)
        await all_succeed(runtime, accepted)
    lost = len(accepted) - await count_where(runtime, accepted, "state = 'succeeded'")
    counts = report("PostgreSQL restart", observed.runs(log), lost=lost)
    print(f"PostgreSQL restart: api answers {statuses}")
    assert set(statuses) <= {200, 202, 503}, statuses  # never a 500
    error, retry_after = unavailable[0]
    assert error["error"]["code"] == "service_unavailable" and "database" in error["error"]["message"]
    assert retry_after is not None and int(retry_after) > 0
    assert len(set(accepted)) == 320 and lost == 0 and counts.overlapping == 0 and counts.completed_jobs == 320


async def test_a_cut_broker_connection_never_runs_a_job_on_two_workers(
    env: TestEnvironment, runtime: Runtime, start_scheduler: StartScheduler, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    await start_scheduler()
    # As many jobs as A runs at once: when its connection drops, B is idle and gets every redelivery at once.
    # 15 s jobs: the management API lists a new connection only seconds after it opens, and the cut must
    # land while A is still running them (checked below).
    ids = await enqueue_observed(runtime, 10, 15.0, log)
    async with service_process(WORKER, env, tmp_path / "a.log", worker_concurrency=10) as worker_a:
        await eventually(held_by(runtime, ids, worker_a, 10), timeout=60, what="worker A to run 10 slow jobs")
        running_on_a = [row["id"] for row in await runtime.pool.fetch(
            "SELECT id FROM jobs WHERE state = 'processing' AND worker LIKE $1", worker_prefix(worker_a) + "%")]
        async with service_process(WORKER, env, tmp_path / "b.log", worker_concurrency=10) as worker_b:
            await ready(env, worker_b)
            # The management API lists a new connection a few seconds late: retried until it is there.
            await eventually(lambda: close_connections(env.vhost, worker_prefix(worker_a)), timeout=30,
                             what="worker A's connection to be listed and closed")
            assert await count_where(runtime, running_on_a, "state = 'processing'") == len(running_on_a)
            await all_succeed(runtime, ids, timeout=120)
    recorded_by_a = await runtime.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND worker LIKE $2",
        running_on_a, worker_prefix(worker_a) + "%")
    dropped = await runtime.pool.fetchval(
        "SELECT coalesce(sum(count), 0) FROM dropped_deliveries WHERE reason = 'lease_live' AND service = 'test'")
    counts = report("broker connection cut", observed.runs(log), lost=0)
    print(f"broker connection cut: redeliveries dropped for a live lease {dropped}, "
          f"A's outcomes recorded {recorded_by_a} of {len(running_on_a)}")
    assert counts.overlapping == 0 and counts.completed_jobs == 10 and counts.runs == 10
    assert recorded_by_a == len(running_on_a)  # A kept its jobs and its outcomes count
    assert dropped >= len(running_on_a)  # their redelivered messages were not run again


async def test_a_frozen_worker_is_taken_over_and_its_late_outcomes_are_refused(
    env: TestEnvironment, runtime: Runtime, start_scheduler: StartScheduler, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    await start_scheduler()
    ids = await enqueue_observed(runtime, 6, 15.0, log)
    async with service_process(WORKER, env, tmp_path / "a.log", worker_concurrency=6,
                               amqp_heartbeat_seconds=2) as worker_a:
        await eventually(held_by(runtime, ids, worker_a, 6), timeout=60, what="worker A to run all 6 jobs")
        async with service_process(WORKER, env, tmp_path / "b.log", worker_concurrency=6) as worker_b:
            await ready(env, worker_b)
            stopped_at = time.time()
            worker_a.send_signal(signal.SIGSTOP)
            try:
                await eventually(held_by(runtime, ids, worker_b, 6), timeout=90,
                                 what="worker B to take over all 6 jobs once A's leases expired")
            finally:
                woken_at = time.time()
                worker_a.send_signal(signal.SIGCONT)
            await all_succeed(runtime, ids, timeout=120)
    print(f"frozen worker: stopped for {woken_at - stopped_at:.1f}s")
    runs = observed.runs(log, frozen={worker_a.pid: (stopped_at, woken_at)})
    counts = report("frozen worker", runs, lost=0)
    successes = await runtime.pool.fetch(
        "SELECT job_id, worker FROM job_states WHERE job_id = ANY($1::uuid[]) AND state = 'succeeded'", ids)
    assert sorted(row["job_id"] for row in successes) == sorted(ids)  # exactly one success each
    assert all(row["worker"].startswith(worker_prefix(worker_b)) for row in successes)
    assert not [run for run in runs if run.pid == worker_a.pid and run.completed]  # A stopped, never finished
    assert counts.overlapping == 0


async def test_a_job_longer_than_its_lease_keeps_it_while_its_worker_renews(
    env: TestEnvironment, runtime: Runtime, start_scheduler: StartScheduler, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    short = {"heartbeat_seconds": 0.5, "job_lease_seconds": 3.0}
    await start_scheduler(**short)
    ids = await enqueue_observed(runtime, 2, 10.0, log)
    async with workers(env, tmp_path, 2, worker_concurrency=1, **short):
        await all_succeed(runtime, ids, timeout=60)
    takeovers = await runtime.pool.fetchval(
        "SELECT count(*) FROM job_states WHERE job_id = ANY($1::uuid[]) AND reason LIKE 'taken over%'", ids)
    counts = report("long job, short lease", observed.runs(log), lost=0)
    assert takeovers == 0 and counts.runs == 2 and counts.overlapping == 0


async def test_a_killed_scheduler_loses_no_delayed_job_and_a_replica_covers_a_frozen_one(
    env: TestEnvironment, runtime: Runtime, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    start = datetime.now(UTC)
    ids: list[uuid.UUID] = []
    for index in range(500):
        job = await runtime.client.enqueue("test.observed", {"seconds": 0, "log": str(log)},
                                           run_at=start + timedelta(seconds=4 + index / 100))
        assert job is not None
        ids.append(job.id)
    async with workers(env, tmp_path, 1):
        async with service_process(SCHEDULER, env, tmp_path / "s1.log") as first:
            await eventually(reaches(runtime, ids, "state <> 'scheduled'", 50), timeout=60,
                             what="the first scheduler to promote due jobs")
            first.kill()
            await first.wait()
        async with service_process(SCHEDULER, env, tmp_path / "s2.log") as second, \
                service_process(SCHEDULER, env, tmp_path / "s3.log"):
            await all_succeed(runtime, ids, timeout=120)
            # A second replica carries on alone while the first is frozen.
            second.send_signal(signal.SIGSTOP)
            later = [job.id for job in await asyncio.gather(*(
                runtime.client.enqueue("test.observed", {"seconds": 0, "log": str(log)}, delay=2)
                for _ in range(100))) if job is not None]
            await all_succeed(runtime, later, timeout=90)
            second.send_signal(signal.SIGCONT)
    every = ids + later
    early = await runtime.pool.fetchval(
        """SELECT count(*) FROM jobs j JOIN job_states s ON s.job_id = j.id
            WHERE j.id = ANY($1::uuid[]) AND s.state = 'processing' AND s.created_at < j.run_at""", every)
    repeated = await runtime.pool.fetchval(
        """SELECT count(*) FROM (SELECT job_id FROM job_states WHERE job_id = ANY($1::uuid[])
                                    AND state = 'processing' GROUP BY job_id HAVING count(*) > 1) AS r""", every)
    counts = report("scheduler kill -9 / frozen replica", observed.runs(log), lost=0)
    print(f"scheduler kill -9 / frozen replica: started early {early}, run more than once {repeated}")
    assert early == 0 and repeated == 0 and counts.overlapping == 0 and counts.completed_jobs == 600


async def test_jobs_of_a_purged_queue_are_published_again(
    env: TestEnvironment, runtime: Runtime, start_scheduler: StartScheduler, management: Management,
    tmp_path: Path,
) -> None:
    log = tmp_path / "runs.jsonl"
    ids = await enqueue_observed(runtime, 100, 0, log)
    await management.request("DELETE", f"queues/{env.vhost}/jobs.test/contents")
    purged_at = time.monotonic()
    await start_scheduler(republish_enqueued_seconds=5.0)
    async with workers(env, tmp_path, 1):
        await all_succeed(runtime, ids, timeout=60)
    print(f"purged queue: all 100 jobs ran {time.monotonic() - purged_at:.1f}s after the purge (window 5 s)")
    counts = report("purged queue", observed.runs(log), lost=0)
    assert counts.completed_jobs == 100 and counts.overlapping == 0


async def test_an_injected_copy_never_runs_a_retry_before_its_delay(
    env: TestEnvironment, runtime: Runtime, start_scheduler: StartScheduler, tmp_path: Path
) -> None:
    await start_scheduler()
    job = await runtime.client.enqueue("test.slow_retry", {})  # fails; its one retry waits 30 s
    assert job is not None
    async with workers(env, tmp_path, 1):
        await eventually(reaches(runtime, [job.id], "state = 'retrying'", 1), timeout=30,
                         what="the first attempt to fail")
        failed_at = await runtime.pool.fetchval(
            "SELECT created_at FROM job_states WHERE job_id = $1 AND state = 'retrying'", job.id)
        # Copies for the attempt that failed and for an older one, straight onto the work queue.
        for attempt in (1, 0):
            await runtime.broker.publish_job("test", Envelope(job.id, "test.slow_retry", attempt), 5)
        await eventually(reaches(runtime, [job.id], "state = 'failed'", 1), timeout=90,
                         what="attempt 2 to run and fail")
    started = await runtime.pool.fetch(
        "SELECT attempt, created_at FROM job_states WHERE job_id = $1 AND state = 'processing' ORDER BY id", job.id)
    waited = (started[1]["created_at"] - failed_at).total_seconds()
    dropped = await runtime.pool.fetch("SELECT reason, count FROM dropped_deliveries")
    print(f"injected retry copies: attempt 2 started {waited:.1f}s after attempt 1 failed; dropped "
          f"{ {row['reason']: row['count'] for row in dropped} }")
    assert [row["attempt"] for row in started] == [1, 2]
    assert waited >= 30
    assert {row["reason"] for row in dropped} >= {"retry_not_due", "stale_attempt"}
    async with running_api(env.settings(), test_registry()) as port, aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}/metrics") as response:
        metrics = await response.text()
    assert 'eventjobs_deliveries_dropped_total{reason="stale_attempt",service="test"} 1.0' in metrics


async def test_a_skip_recurring_job_does_not_burst_after_its_scheduler_was_frozen(
    env: TestEnvironment, runtime: Runtime, tmp_path: Path
) -> None:
    await runtime.pool.execute(
        """INSERT INTO recurring_jobs (id, kind, args, cron, misfire_policy)
           VALUES ('every-10s', 'test.noop', '{}', '*/10 * * * * *', 'skip')""")

    async def fire_times() -> list[datetime]:
        rows = await runtime.pool.fetch("SELECT fire_time FROM jobs WHERE recurring_id = 'every-10s'")
        return sorted(row["fire_time"] for row in rows)

    async with service_process(SCHEDULER, env, tmp_path / "scheduler.log") as scheduler:
        await eventually(fire_times, timeout=30, what="the first occurrence")
        scheduler.send_signal(signal.SIGSTOP)
        frozen_at = datetime.now(UTC)
        try:
            await asyncio.sleep(60)  # the fault itself: six occurrences pass while the scheduler is frozen
        finally:
            scheduler.send_signal(signal.SIGCONT)
        woken_at = datetime.now(UTC)

        async def fired_after_waking() -> list[datetime]:
            return [time for time in await fire_times() if time > woken_at]

        await eventually(fired_after_waking, timeout=30, what="the next regular occurrence after waking")
    during = [time for time in await fire_times() if frozen_at < time <= woken_at]
    print(f"frozen scheduler, skip policy: occurrences fired for the 60 s it was frozen: {len(during)}")
    assert during == []


async def test_a_worker_cut_off_from_rabbitmq_for_too_long_exits_non_zero(
    env: TestEnvironment, tmp_path: Path
) -> None:
    async with running_proxy(env.amqp_url) as proxy, service_process(
        WORKER, env, tmp_path / "worker.log", amqp_url=proxy.url(env.amqp_url), dependency_timeout_seconds=3.0,
    ) as worker:
        await ready(env, worker)
        cut_at = time.monotonic()
        await proxy.cut()
        returncode = await asyncio.wait_for(worker.wait(), 60)
    print(f"worker cut off from RabbitMQ: exited {returncode} after {time.monotonic() - cut_at:.1f}s "
          f"(DEPENDENCY_TIMEOUT_SECONDS 3)")
    assert returncode == 3  # for the orchestrator: restart me
