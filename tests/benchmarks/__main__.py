"""`make bench`: 20,000 no-op jobs, enqueue rate and end-to-end drain rate, against a bare aio-pika peer.

Creates its own database and RabbitMQ vhost and removes them. BENCH_JOBS, BENCH_PUBLISHERS and
BENCH_WORKER_CONCURRENCY change the shape; BENCH_WORKER_PREFIX="-m cProfile -o worker.prof"
profiles the worker process.
"""

from __future__ import annotations

import asyncio
import logging
import os

from tests.benchmarks.throughput import bare_aio_pika, engine, settings_from_env
from tests.support.environment import Management, create_template_database, drop_database, test_environment


async def main() -> None:
    jobs, publishers, concurrency = settings_from_env()
    print(f"{jobs:,} no-op jobs; {publishers} concurrent enqueuers; one worker process, "
          f"concurrency = prefetch = {concurrency}; {os.cpu_count()} CPUs")
    template = await create_template_database()
    try:
        management = Management()
        async with test_environment(template, management) as env:
            peer = await bare_aio_pika(env, jobs, publishers, concurrency)
        async with test_environment(template, management) as env:
            ours = await engine(env, jobs, publishers, concurrency)
    finally:
        await drop_database(template)

    rows = [
        ("enqueue (row + publish + confirm)", ours.enqueue_per_second, "publish + confirm", peer.enqueue_per_second),
        ("drain (claim, run, succeeded, ack)", ours.drain_per_second, "consume + ack", peer.drain_per_second),
    ]
    print(f"{'engine':<36}{'jobs/s':>10}   {'bare aio-pika':<20}{'msgs/s':>10}{'ratio':>9}")
    for label, value, peer_label, peer_value in rows:
        print(f"{label:<36}{value:>10,.0f}   {peer_label:<20}{peer_value:>10,.0f}{value / peer_value:>9.2f}")
    assert ours.drain_with_startup_per_second is not None
    print(f"{'drain incl. worker process start-up':<36}{ours.drain_with_startup_per_second:>10,.0f}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
