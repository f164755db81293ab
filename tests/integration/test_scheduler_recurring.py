"""Recurring jobs: exactly once per occurrence across replicas, and the misfire policy after a restart."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from shared.runtime import Runtime
from tests.support.environment import TestEnvironment
from tests.support.scheduler import (  # noqa: F401  (fixtures)
    LogRecorder,
    StartScheduler,
    scheduler_logs_fixture,
    start_scheduler_fixture,
)
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


async def add_recurring(
    executor: asyncpg.Pool, recurring_id: str, cron: str, *, policy: str = "fire_once", grace: int = 3600
) -> None:
    await executor.execute(
        """INSERT INTO recurring_jobs (id, kind, args, cron, timezone, misfire_policy, misfire_grace_seconds)
           VALUES ($1, 'test.noop', '{}'::jsonb, $2, 'UTC', $3, $4)""",
        recurring_id, cron, policy, grace,
    )


async def fire_times(executor: asyncpg.Pool, recurring_id: str) -> list[datetime]:
    rows = await executor.fetch(
        "SELECT fire_time FROM jobs WHERE recurring_id = $1 ORDER BY fire_time", recurring_id
    )
    return [row["fire_time"] for row in rows]


@asynccontextmanager
async def scheduler_process(env: TestEnvironment, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.scheduler_process", cwd=ROOT, stderr=stderr, stdout=stderr,
            env=env.process_env(),
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def log_lines(log: Path) -> list[dict[str, object]]:
    lines = []
    for line in log.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            lines.append({"message": line, "level": "unparsed"})
    return lines


async def test_two_scheduler_processes_fire_each_second_exactly_once(
    env: TestEnvironment, runtime: Runtime, tmp_path: Path
) -> None:
    logs = [tmp_path / "scheduler-1.log", tmp_path / "scheduler-2.log"]
    async with scheduler_process(env, logs[0]) as first, scheduler_process(env, logs[1]) as second:

        async def both_heartbeating() -> bool:
            count = await runtime.pool.fetchval("SELECT count(*) FROM servers WHERE service = 'scheduler'")
            return bool(count == 2)

        await eventually(both_heartbeating, timeout=60, what="two schedulers in the servers table")
        await add_recurring(runtime.pool, "every-second", "* * * * * *")

        async def ten_occurrences() -> bool:
            return len(await fire_times(runtime.pool, "every-second")) >= 10

        await eventually(ten_occurrences, timeout=60, what="ten occurrences of the every-second job")
        for process in (first, second):
            assert process.returncode is None, "a scheduler exited"
            process.send_signal(signal.SIGTERM)
        exit_codes = await asyncio.wait_for(asyncio.gather(first.wait(), second.wait()), 60)

    assert exit_codes == [0, 0], "SIGTERM stops the scheduler cleanly"
    assert await runtime.pool.fetchval("SELECT count(*) FROM servers WHERE service = 'scheduler'") == 0

    times = await fire_times(runtime.pool, "every-second")
    # One job per occurrence, every second from the first to the last: none twice, none missing.
    expected = [times[0] + timedelta(seconds=n) for n in range(len(times))]
    assert times == expected
    early = await runtime.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE recurring_id = 'every-second' AND created_at < fire_time"
    )
    assert early == 0, "an occurrence was enqueued before its fire time"
    last = await runtime.pool.fetchrow(
        "SELECT last_fire_time, last_job_id FROM recurring_jobs WHERE id = 'every-second'"
    )
    assert last["last_fire_time"] == times[-1]
    assert last["last_job_id"] == await runtime.pool.fetchval(
        "SELECT id FROM jobs WHERE recurring_id = 'every-second' AND fire_time = $1", times[-1]
    )

    fired = [
        sum(1 for line in log_lines(log)
            if line["message"] == "recurring job fired" and line.get("recurring_id") == "every-second")
        for log in logs
    ]
    problems = [line for log in logs for line in log_lines(log) if line.get("level") in {"error", "unparsed"}]
    print(f"\noccurrences fired by each scheduler: {fired} (total {len(times)})")
    assert sum(fired) == len(times), "each occurrence was reported as fired by exactly one scheduler"
    assert problems == []


async def test_misfire_policy_after_the_scheduler_missed_three_occurrences(
    runtime: Runtime, start_scheduler: StartScheduler, scheduler_logs: LogRecorder
) -> None:
    first = await start_scheduler()

    async def ready() -> bool:
        return bool(scheduler_logs.matching("recurring job scheduled"))

    await eventually(ready, timeout=60, what="the scheduler to load the recurring definitions")

    # One occurrence the scheduler fires, then three it misses while stopped; the next is a minute later.
    begin = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    occurrences = [begin, *(begin + timedelta(seconds=offset) for offset in (6, 7, 8))]
    cron = ",".join(str(moment.second) for moment in occurrences) + " * * * * *"
    policies = ("fire_once", "skip", "fire_all")
    for policy in policies:
        await add_recurring(runtime.pool, policy, cron, policy=policy)

    async def first_occurrence_fired() -> bool:
        return [await fire_times(runtime.pool, policy) for policy in policies] == [[begin]] * len(policies)

    await eventually(first_occurrence_fired, timeout=30, what="the first occurrence of each recurring job")
    await first.stop()
    for policy in policies:
        assert await fire_times(runtime.pool, policy) == [begin], "the scheduler stopped too late for this test"

    async def three_occurrences_passed() -> bool:
        return datetime.now(UTC) > occurrences[-1] + timedelta(milliseconds=200)

    await eventually(three_occurrences_passed, timeout=30, what="the three occurrences to pass")
    scheduler_logs.records.clear()
    await start_scheduler()

    async def all_loaded() -> bool:
        return all(scheduler_logs.matching("recurring job scheduled", recurring_id=policy) for policy in policies)

    await eventually(all_loaded, timeout=60, what="the restarted scheduler to load the three definitions")
    for policy in policies:
        [loaded] = scheduler_logs.matching("recurring job scheduled", recurring_id=policy)
        assert loaded.missed == 3  # type: ignore[attr-defined]

    expected = {
        "fire_once": [begin, occurrences[-1]],  # one catch-up run, at the latest missed occurrence
        "skip": [begin],
        "fire_all": occurrences,
    }

    async def caught_up() -> bool:
        return await fire_times(runtime.pool, "fire_all") == expected["fire_all"]

    await eventually(caught_up, timeout=30, what="fire_all to replay the three missed occurrences")
    await eventually(lambda: _fire_times_equal(runtime, "fire_once", expected["fire_once"]), timeout=30,
                     what="fire_once to run once")
    for policy in policies:
        assert await fire_times(runtime.pool, policy) == expected[policy], policy


async def _fire_times_equal(runtime: Runtime, recurring_id: str, expected: list[datetime]) -> bool:
    return await fire_times(runtime.pool, recurring_id) == expected


async def test_disabled_and_changed_definitions_are_reloaded(
    runtime: Runtime, start_scheduler: StartScheduler, scheduler_logs: LogRecorder
) -> None:
    await add_recurring(runtime.pool, "paused", "* * * * * *")
    await runtime.pool.execute("UPDATE recurring_jobs SET enabled = false WHERE id = 'paused'")
    await start_scheduler()

    async def ready() -> bool:
        return bool(scheduler_logs.matching("recurring job scheduled"))

    await eventually(ready, timeout=60, what="the scheduler to load the recurring definitions")
    assert not scheduler_logs.matching("recurring job scheduled", recurring_id="paused")
    assert await fire_times(runtime.pool, "paused") == []

    # Enabling it is a definition change: the trigger notifies and the scheduler picks it up.
    await runtime.pool.execute("UPDATE recurring_jobs SET enabled = true WHERE id = 'paused'")

    async def fired_twice() -> bool:
        return len(await fire_times(runtime.pool, "paused")) >= 2

    await eventually(fired_twice, timeout=30, what="the re-enabled job to fire")
    await runtime.pool.execute("UPDATE recurring_jobs SET enabled = false WHERE id = 'paused'")
    await eventually(lambda: _paused_logged(scheduler_logs), timeout=30, what="the scheduler to pause the job")
    paused_at = len(await fire_times(runtime.pool, "paused"))
    # A broken definition is reported and the others keep firing.
    await add_recurring(runtime.pool, "broken", "not a cron")
    await add_recurring(runtime.pool, "healthy", "* * * * * *")

    async def healthy_fired() -> bool:
        return len(await fire_times(runtime.pool, "healthy")) >= 2

    await eventually(healthy_fired, timeout=30, what="the healthy job to fire next to a broken one")
    assert scheduler_logs.matching("recurring job cannot be scheduled", recurring_id="broken")
    assert len(await fire_times(runtime.pool, "paused")) == paused_at


async def _paused_logged(logs: LogRecorder) -> bool:
    return bool(logs.matching("recurring job paused", recurring_id="paused"))
