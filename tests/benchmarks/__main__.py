"""`make bench`: eventjobs against Celery and Dramatiq on the same broker and Postgres (tests.benchmarks.compare).

BENCH_JOBS (20,000), BENCH_ROUNDS (2), BENCH_SYSTEMS (eventjobs,celery,dramatiq), BENCH_PUBLISHERS (50),
BENCH_WORKER_CONCURRENCY (50), BENCH_WORKER_PREFETCH (the concurrency), BENCH_LATENCY_JOBS, BENCH_DELAYED_JOBS
change the shape; BENCH_JOBS=2000 is a quick run. Exits non-zero when one of our jobs lacks a history row.
"""

from __future__ import annotations

import asyncio
import logging
import os

import uvloop

from tests.benchmarks.compare import Config, run_bench

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    # The bench process stands for the api process enqueuing, so it runs on the services' loop (EVENT_LOOP).
    loop_factory = uvloop.new_event_loop if os.environ.get("EVENT_LOOP", "uvloop") == "uvloop" else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run_bench(Config.from_env()))
