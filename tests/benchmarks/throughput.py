"""20,000 no-op jobs through the engine, against a bare aio-pika run on the same broker.

The peer is the floor: the same number of persistent messages published with confirms and
consumed with manual acks, nothing else. The engine adds a Postgres row, its history and the
state writes to that; the ratio says what they cost on this machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika

from shared.worker import Runtime, open_runtime
from tests.support.environment import TestEnvironment
from tests.support.kinds import test_registry

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Figures:
    enqueue_per_second: float
    drain_per_second: float
    drain_with_startup_per_second: float | None = None


async def bounded(count: int, concurrency: int, make: Callable[[int], Awaitable[object]]) -> None:
    """Run `make(i)` for every i, `concurrency` at a time, as a busy api process would."""
    next_index = iter(range(count))

    async def lane() -> None:
        for index in next_index:
            await make(index)

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def wait_until(probe: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark did not finish in time")
        await asyncio.sleep(0.05)


async def engine(env: TestEnvironment, jobs: int, publishers: int, worker_concurrency: int) -> Figures:
    settings = env.settings()
    async with open_runtime(settings, test_registry(), pool_size=publishers) as runtime:
        started = time.perf_counter()
        await bounded(jobs, publishers, lambda n: runtime.client.enqueue("test.noop", {"n": n}))
        enqueue_seconds = time.perf_counter() - started

        # The worker is a process of its own, as in production; the clock runs from its start
        # (imports and connections included) to the last `succeeded`.
        started = time.perf_counter()
        worker = await asyncio.create_subprocess_exec(
            sys.executable, *os.environ.get("BENCH_WORKER_PREFIX", "").split(), "-m", "tests.support.worker",
            cwd=ROOT, stderr=asyncio.subprocess.DEVNULL,
            env=env.process_env(worker_concurrency=worker_concurrency, worker_prefetch=worker_concurrency,
                                log_level="WARNING"),
        )
        try:
            await wait_until(lambda: all_succeeded(runtime, jobs), timeout=900)
            with_startup_seconds = time.perf_counter() - started
        finally:
            worker.terminate()
            await worker.wait()
        # The drain proper, from Postgres' own clock: first claim to last `succeeded`.
        drain_seconds = await runtime.pool.fetchval(
            """SELECT extract(epoch FROM max(created_at) FILTER (WHERE state = 'succeeded')
                                       - min(created_at) FILTER (WHERE state = 'processing'))
                 FROM job_states"""
        )
        histories = await runtime.pool.fetchval(
            """SELECT count(*) FROM (SELECT job_id FROM job_states GROUP BY job_id
                                      HAVING array_agg(state ORDER BY id) = '{enqueued,processing,succeeded}') h"""
        )
        if histories != jobs:
            odd = await runtime.pool.fetch(
                """SELECT job_id, array_agg(state || ':' || coalesce(reason, '') || ':' || coalesce(worker, '')
                                            ORDER BY id) AS h
                     FROM job_states GROUP BY job_id
                   HAVING array_agg(state ORDER BY id) <> '{enqueued,processing,succeeded}'"""
            )
            print(f"only {histories} of {jobs} jobs have the plain history; for example:",
                  *(dict(row) for row in odd[:5]), sep="\n")
    return Figures(jobs / enqueue_seconds, jobs / float(drain_seconds), jobs / with_startup_seconds)


async def all_succeeded(runtime: Runtime, jobs: int) -> bool:
    count = await runtime.pool.fetchval("SELECT count(*) FROM jobs WHERE state = 'succeeded'")
    return bool(count == jobs)


async def bare_aio_pika(env: TestEnvironment, messages: int, publishers: int, prefetch: int) -> Figures:
    connection = await aio_pika.connect(env.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue("bench.peer", durable=True, arguments={"x-max-priority": 10})
        body = b'{"job_id": "00000000-0000-0000-0000-000000000000", "kind": "test.noop", "attempt": 0}'

        started = time.perf_counter()
        await bounded(messages, publishers, lambda _: channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=5), queue.name,
        ))
        publish_seconds = time.perf_counter() - started

        consumer_channel = await connection.channel()
        await consumer_channel.set_qos(prefetch_count=prefetch)
        consumer_queue = await consumer_channel.get_queue(queue.name)
        done = asyncio.Event()
        acked = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal acked
            await message.ack()
            acked += 1
            if acked == messages:
                done.set()

        started = time.perf_counter()
        tag = await consumer_queue.consume(on_message)
        await asyncio.wait_for(done.wait(), 900)
        consume_seconds = time.perf_counter() - started
        await consumer_queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    return Figures(messages / publish_seconds, messages / consume_seconds)


def settings_from_env() -> tuple[int, int, int]:
    return (int(os.environ.get("BENCH_JOBS", "20000")), int(os.environ.get("BENCH_PUBLISHERS", "50")),
            int(os.environ.get("BENCH_WORKER_CONCURRENCY", "50")))
