"""The three systems `make bench` measures, behind one interface: eventjobs, Celery 5 and Dramatiq 2.

Each run gets its own database and RabbitMQ vhost (tests.support.environment), removed afterwards. Every
phase drives the system as its users would: ours through `JobClient` in one asyncio process, the peers
through their own client libraries from threads of the bench process (they are synchronous), and each
system's worker as a separate process with the peers' documented production settings.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from shared.runtime import Runtime, open_runtime
from tests.benchmarks.sink import SINK_TABLE
from tests.support.environment import TestEnvironment
from tests.support.kinds import test_registry

ROOT = Path(__file__).resolve().parents[2]
FULL_HISTORIES = ("{enqueued,processing,succeeded}", "{scheduled,enqueued,processing,succeeded}")


# How often the bench asks whether a phase is done. Every figure is taken from the systems' own timestamps, so
# this only decides how soon the next phase starts; but each question is a count over the run's rows in the
# same Postgres (ours: 10 ms of Postgres CPU for 40,000 jobs, measured with pg_stat_statements), and every
# 50 ms it took a fifth of a core from the system being measured, in the drain and while delayed jobs came due.
POLL_SECONDS = 0.5


async def wait_until(probe: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the benchmark waited {timeout:.0f} s for {what}")
        await asyncio.sleep(POLL_SECONDS)


class HistoryMissing(AssertionError):
    """One of our jobs lacks a row of its history: the run fails."""


class System(Protocol):
    name: str

    async def enqueue(self, first: int, count: int, *, confirms: bool) -> float:
        """Enqueue jobs first..first+count-1 as fast as the client allows; the seconds it took."""

    async def enqueue_paced(self, first: int, count: int, rate: float) -> None:
        """Enqueue at `rate` jobs/s, each stamped with the time it was sent."""

    async def enqueue_delayed(self, first: int, due: Sequence[float]) -> None:
        """One job per epoch due time, with the system's own delay feature."""

    def worker(self) -> Any:
        """An async context manager: the worker process(es) running; yields the pid to sample for RSS."""

    async def finished(self) -> int: ...

    async def drain_rate(self, below: int) -> float:
        """Jobs n < below: count / (last finish - first start), by Postgres' clock."""

    async def latencies(self, first: int, count: int) -> list[float]:
        """Seconds from send to finish of jobs first..first+count-1."""

    async def lateness(self, first: int, count: int) -> list[float]:
        """Seconds from due time to start of the delayed jobs."""


async def sink_rows(pool: asyncpg.Pool, query: str, *args: Any) -> list[float]:
    return [float(value) for (value,) in await pool.fetch(query, *args)]


def process_env(env: TestEnvironment) -> dict[str, str]:
    return {**os.environ, "BENCH_AMQP_URL": env.amqp_url, "BENCH_DATABASE_URL": env.database_url,
            "PYTHONPATH": str(ROOT)}


@asynccontextmanager
async def child(
    command: Sequence[str], environment: dict[str, str], log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A service process in its own session, stopped with SIGTERM (its warm shutdown) and, failing that, SIGKILL
    of its whole session (forked children too)."""
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=environment,
                                                       stdin=asyncio.subprocess.DEVNULL, stdout=output,
                                                       stderr=output, start_new_session=True)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


class Ours:
    name = "eventjobs"

    def __init__(self, env: TestEnvironment, runtime: Runtime, publishers: int, concurrency: int, log: Path,
                 prefetch: int | None = None) -> None:
        self.env, self.runtime, self.publishers, self.concurrency, self.log = env, runtime, publishers, concurrency, log
        self.prefetch = prefetch or concurrency
        self.sent: dict[int, float] = {}

    async def enqueue(self, first: int, count: int, *, confirms: bool) -> float:
        assert confirms, "ours always publishes with confirms"
        started = time.perf_counter()
        await bounded(first, count, self.publishers,
                      lambda n: self.runtime.client.enqueue("test.noop", {"n": n}))
        return time.perf_counter() - started

    async def enqueue_many(self, first: int, count: int, batch: int) -> float:
        started = time.perf_counter()
        for start in range(first, first + count, batch):
            end = min(start + batch, first + count)
            await self.runtime.client.enqueue_many([("test.noop", {"n": n}) for n in range(start, end)])
        return time.perf_counter() - started

    async def enqueue_paced(self, first: int, count: int, rate: float) -> None:
        async def one(n: int) -> None:
            self.sent[n] = time.time()
            await self.runtime.client.enqueue("test.noop", {"n": n})

        await paced(first, count, rate, one)

    async def enqueue_delayed(self, first: int, due: Sequence[float]) -> None:
        await bounded(first, len(due), self.publishers, lambda n: self.runtime.client.enqueue(
            "test.noop", {"n": n}, run_at=datetime.fromtimestamp(due[n - first], UTC)))

    @asynccontextmanager
    async def worker(self) -> AsyncIterator[int]:
        # Production's lease and heartbeat, not the tests' short ones (a 6 s lease on a loaded machine
        # measures takeovers, not throughput).
        production = {"heartbeat_seconds": 5.0, "job_lease_seconds": 30.0, "log_level": "WARNING"}
        worker_env = self.env.process_env(worker_concurrency=self.concurrency, worker_prefetch=self.prefetch,
                                          **production)
        scheduler_env = self.env.process_env(**production)
        # The scheduler first, and up, as it would be in a deployment: its start (imports, topology, recurring
        # jobs; about half a second of CPU) is not part of the drain, and the peers' drains have no such process.
        async with child([sys.executable, "-m", "tests.support.scheduler_process"], scheduler_env, self.log):
            # Delayed jobs are the scheduler's too: it must be up before they are due.
            await wait_until(self.scheduler_ready, 60, "the scheduler's first heartbeat")
            async with child([sys.executable, "-m", "tests.support.worker"], worker_env, self.log) as worker:
                yield worker.pid

    async def scheduler_ready(self) -> bool:
        return bool(await self.runtime.pool.fetchval("SELECT count(*) FROM servers WHERE service = 'scheduler'"))

    async def finished(self) -> int:
        return int(await self.runtime.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE state = 'succeeded' AND kind = 'test.noop'"))

    async def drain_rate(self, below: int) -> float:
        seconds = await self.runtime.pool.fetchval(
            """SELECT extract(epoch FROM max(s.created_at) FILTER (WHERE s.state = 'succeeded')
                                       - min(s.created_at) FILTER (WHERE s.state = 'processing'))
                 FROM job_states s JOIN jobs j ON j.id = s.job_id WHERE (j.args->>'n')::int < $1""", below)
        return below / float(seconds)

    async def latencies(self, first: int, count: int) -> list[float]:
        rows = await self.runtime.pool.fetch(
            """SELECT (j.args->>'n')::int AS n, extract(epoch FROM s.created_at) AS done
                 FROM jobs j JOIN job_states s ON s.job_id = j.id AND s.state = 'succeeded'
                WHERE (j.args->>'n')::int >= $1 AND (j.args->>'n')::int < $2""", first, first + count)
        return [float(row["done"]) - self.sent[row["n"]] for row in rows]

    async def lateness(self, first: int, count: int) -> list[float]:
        return await sink_rows(self.runtime.pool,
            """SELECT extract(epoch FROM s.created_at - j.run_at)
                 FROM jobs j JOIN job_states s ON s.job_id = j.id AND s.state = 'processing'
                WHERE (j.args->>'n')::int >= $1 AND (j.args->>'n')::int < $2""", first, first + count)

    async def check_histories(self, expected: int) -> None:
        """Every job has its whole history, one row per transition; else the run fails.

        Only the benchmark's own kind: the scheduler fires its recurring jobs into the same database.
        """
        full = await self.runtime.pool.fetchval(
            """SELECT count(*) FROM (SELECT job_id FROM job_states s JOIN jobs j ON j.id = s.job_id
                                      WHERE j.kind = 'test.noop' GROUP BY job_id
                                      HAVING array_agg(s.state ORDER BY s.id)::text = ANY($1::text[])) h""",
            list(FULL_HISTORIES))
        jobs = await self.runtime.pool.fetchval("SELECT count(*) FROM jobs WHERE kind = 'test.noop'")
        if full != expected or jobs != expected:
            odd = await self.runtime.pool.fetch(
                """SELECT j.id, array_agg(s.state ORDER BY s.id) AS history
                     FROM jobs j LEFT JOIN job_states s ON s.job_id = j.id WHERE j.kind = 'test.noop'
                    GROUP BY j.id
                   HAVING array_agg(s.state ORDER BY s.id)::text <> ALL($1::text[]) LIMIT 5""",
                list(FULL_HISTORIES))
            raise HistoryMissing(f"{full} of {expected} jobs ({jobs} rows) have a full history; for example "
                                 f"{[dict(row) for row in odd]}")


class Peer:
    """What Celery and Dramatiq share: the sink, threads for their synchronous clients."""

    name = "peer"

    def __init__(self, env: TestEnvironment, pool: asyncpg.Pool, threads: int, log: Path) -> None:
        self.env, self.pool, self.threads, self.log = env, pool, threads, log

    def send(self, n: int, *, confirms: bool, sent: float | None = None, due: float | None = None) -> None:
        raise NotImplementedError

    async def enqueue(self, first: int, count: int, *, confirms: bool) -> float:
        started = time.perf_counter()
        await in_threads(self.threads, [(n, None) for n in range(first, first + count)],
                         lambda n, _: self.send(n, confirms=confirms))
        return time.perf_counter() - started

    async def enqueue_paced(self, first: int, count: int, rate: float) -> None:
        start = time.time() + 0.05
        # Each thread sleeps to its own jobs' slots, so a slow confirm of one does not hold back the rest.
        schedule = [(n, start + (n - first) / rate) for n in range(first, first + count)]

        def one(n: int, at: float | None) -> None:
            assert at is not None
            time.sleep(max(0.0, at - time.time()))
            self.send(n, confirms=True, sent=time.time())

        await in_threads(self.threads, schedule, one)

    async def enqueue_delayed(self, first: int, due: Sequence[float]) -> None:
        await in_threads(self.threads, [(first + index, at) for index, at in enumerate(due)],
                         lambda n, at: self.send(n, confirms=True, due=at))

    async def finished(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM bench_sink"))

    async def drain_rate(self, below: int) -> float:
        seconds = await self.pool.fetchval("SELECT max(done) - min(started) FROM bench_sink WHERE n < $1", below)
        return below / float(seconds)

    async def latencies(self, first: int, count: int) -> list[float]:
        return await sink_rows(self.pool, "SELECT done - sent FROM bench_sink WHERE n >= $1 AND n < $2",
                               first, first + count)

    async def lateness(self, first: int, count: int) -> list[float]:
        return await sink_rows(self.pool, "SELECT started - due FROM bench_sink WHERE n >= $1 AND n < $2",
                               first, first + count)


class CeleryPeer(Peer):
    name = "celery"

    def __init__(self, env: TestEnvironment, pool: asyncpg.Pool, threads: int, log: Path) -> None:
        super().__init__(env, pool, threads, log)
        from tests.benchmarks.celery_app import make_app

        self.apps = {confirms: make_app(env.amqp_url, confirms=confirms) for confirms in (False, True)}

    def send(self, n: int, *, confirms: bool, sent: float | None = None, due: float | None = None) -> None:
        eta = None if due is None else datetime.fromtimestamp(due, UTC)  # Celery's ETA, as its users schedule
        self.apps[confirms].send_task("bench.noop", args=(n, sent, due), eta=eta)

    @asynccontextmanager
    async def worker(self) -> AsyncIterator[int]:
        # Prefork with one process per core (2 here), acks_late: the setting for jobs that must not be lost.
        command = [sys.executable, "-m", "celery", "-A", "tests.benchmarks.celery_app", "worker", "-P", "prefork",
                   "-c", str(os.cpu_count() or 2), "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-l", "WARNING"]
        async with child(command, process_env(self.env), self.log) as worker:
            yield worker.pid

    def close(self) -> None:
        for app in self.apps.values():
            app.close()


class DramatiqPeer(Peer):
    name = "dramatiq"

    def __init__(self, env: TestEnvironment, pool: asyncpg.Pool, threads: int, log: Path) -> None:
        super().__init__(env, pool, threads, log)
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        self.brokers = {confirms: RabbitmqBroker(url=env.amqp_url, confirm_delivery=confirms)
                        for confirms in (False, True)}

    def send(self, n: int, *, confirms: bool, sent: float | None = None, due: float | None = None) -> None:
        import dramatiq

        from tests.benchmarks.dramatiq_app import ACTOR, QUEUE

        message = dramatiq.Message(queue_name=QUEUE, actor_name=ACTOR, args=(n, sent, due), kwargs={}, options={})
        # Dramatiq's delay (milliseconds), as its users schedule: the worker holds the message until its eta.
        delay = None if due is None else max(0, int((due - time.time()) * 1000))
        self.brokers[confirms].enqueue(message, delay=delay)

    @asynccontextmanager
    async def worker(self) -> AsyncIterator[int]:
        command = [sys.executable, "-m", "dramatiq", "tests.benchmarks.dramatiq_app",
                   "--processes", str(os.cpu_count() or 2), "--threads", "8"]
        async with child(command, process_env(self.env), self.log) as worker:
            yield worker.pid

    def close(self) -> None:
        for broker in self.brokers.values():
            broker.close()


async def prepare_sink(env: TestEnvironment) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(env.database_url, min_size=1, max_size=4)
    await pool.execute(SINK_TABLE)
    return pool


@asynccontextmanager
async def open_system(name: str, env: TestEnvironment, *, publishers: int, concurrency: int,
                      threads: int, log: Path, prefetch: int | None = None) -> AsyncIterator[Any]:
    if name == "eventjobs":
        async with open_runtime(env.settings(), test_registry(), pool_size=publishers) as runtime:
            yield Ours(env, runtime, publishers, concurrency, log, prefetch)
        return
    pool = await prepare_sink(env)
    peer: CeleryPeer | DramatiqPeer | None = None
    try:
        peer = CeleryPeer(env, pool, threads, log) if name == "celery" else DramatiqPeer(env, pool, threads, log)
        yield peer
    finally:
        if peer is not None:
            peer.close()
        await pool.close()


async def bounded(first: int, count: int, concurrency: int, make: Callable[[int], Any]) -> None:
    """Run `make(n)` for every n, `concurrency` at a time, as a busy api process would."""
    numbers = iter(range(first, first + count))

    async def lane() -> None:
        for n in numbers:
            await make(n)

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def paced(first: int, count: int, rate: float, make: Callable[[int], Any]) -> None:
    """Start `make(n)` at n's slot of a steady rate, whether or not the earlier ones have finished."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []
    for index in range(count):
        await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
        tasks.append(asyncio.create_task(make(first + index)))
    await asyncio.gather(*tasks)


async def in_threads(threads: int, items: list[tuple[int, float | None]],
                     call: Callable[[int, float | None], None]) -> None:
    """`call` for every item from `threads` threads, each taking every threads-th item in order."""
    def lane(offset: int) -> None:
        for n, extra in items[offset::threads]:
            call(n, extra)

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(threads) as executor:
        await asyncio.gather(*(loop.run_in_executor(executor, lane, offset) for offset in range(threads)))


def rss_bytes(root: int) -> int:
    """Resident memory of a process and all its descendants (the peers fork their worker processes)."""
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def delayed_due(count: int, ahead: tuple[float, float]) -> list[float]:
    """Due times spread evenly over `ahead` seconds from now (epoch seconds)."""
    now, (low, high) = time.time(), ahead
    return [now + low + (high - low) * index / max(1, count - 1) for index in range(count)]
