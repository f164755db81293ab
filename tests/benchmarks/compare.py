"""eventjobs against Celery 5 and Dramatiq 2, same broker, same Postgres, same run, alternately (A B A B).

Per system and round, in a fresh database and vhost:
1. enqueue N jobs with no worker running (ours with confirms; the peers half with and half without) and,
   for ours, N more through `enqueue_many` in batches of 1,000;
2. start the worker and time the drain of the first N, by Postgres' clock (first start to last finish),
   sampling the worker's resident memory (its whole process tree) meanwhile;
3. end-to-end latency: jobs sent at 50 % of this system's own drain rate of this round, send to finish;
4. delayed jobs due 5-15 s ahead (Celery's ETA, Dramatiq's delay, our run_at): lateness, due to start;
5. ours only: every job has its full history, or the run fails;
6. ours only: sign-ups through the api as a real process (tests.benchmarks.signups).
Medians over the rounds go in the table and, with every round's figures, in var/bench/<time>.json.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.signups import SignupConfig, measure_signups
from tests.benchmarks.systems import Ours, delayed_due, open_system, rss_bytes, wait_until
from tests.support.environment import Management, create_template_database, drop_database, test_environment

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("eventjobs", "celery", "dramatiq")


@dataclass(frozen=True)
class Config:
    jobs: int = 20_000
    rounds: int = 2
    publishers: int = 50  # our concurrent enqueuers in one process
    peer_threads: int = 8  # the peers' client threads in one process
    concurrency: int = 50  # our worker's concurrency
    prefetch: int | None = None  # our worker's prefetch; None: the concurrency (the services' default)
    latency_jobs: int = 2_000
    delayed_jobs: int = 1_000
    delayed_ahead: tuple[float, float] = (5.0, 15.0)
    batch: int = 1_000  # enqueue_many batch size
    systems: tuple[str, ...] = SYSTEMS
    timeout: float = 900.0
    signups: SignupConfig = field(default_factory=SignupConfig)  # ours only: sign-ups through the api

    @classmethod
    def from_env(cls) -> Config:
        jobs = int(os.environ.get("BENCH_JOBS", "20000"))
        return cls(
            jobs=jobs, rounds=int(os.environ.get("BENCH_ROUNDS", "2")),
            publishers=int(os.environ.get("BENCH_PUBLISHERS", "50")),
            concurrency=int(os.environ.get("BENCH_WORKER_CONCURRENCY", "50")),
            prefetch=int(os.environ["BENCH_WORKER_PREFETCH"]) if os.environ.get("BENCH_WORKER_PREFETCH") else None,
            latency_jobs=int(os.environ.get("BENCH_LATENCY_JOBS", str(min(2_000, max(50, jobs // 10))))),
            delayed_jobs=int(os.environ.get("BENCH_DELAYED_JOBS", str(min(1_000, max(20, jobs // 20))))),
            systems=tuple(os.environ.get("BENCH_SYSTEMS", ",".join(SYSTEMS)).split(",")),
            signups=SignupConfig.from_env(),
        )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(name: str, config: Config, template: str, management: Management, log: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    n = config.jobs
    async with test_environment(template, management) as env, open_system(
        name, env, publishers=config.publishers, concurrency=config.concurrency, prefetch=config.prefetch,
        threads=config.peer_threads, log=log,
    ) as system:
        if isinstance(system, Ours):
            figures["enqueue_confirmed"] = n / await system.enqueue(0, n, confirms=True)
            figures["enqueue_many"] = n / await system.enqueue_many(n, n, config.batch)
            total = 2 * n
        else:
            half = n // 2
            figures["enqueue_confirmed"] = half / await system.enqueue(0, half, confirms=True)
            figures["enqueue_unconfirmed"] = (n - half) / await system.enqueue(half, n - half, confirms=False)
            total = n
        async with system.worker() as pid:
            peak_rss = 0

            async def drained() -> bool:
                nonlocal peak_rss
                peak_rss = max(peak_rss, rss_bytes(pid))
                return await system.finished() >= total

            await wait_until(drained, config.timeout, f"{name} to drain {total:,} jobs")
            figures["worker_rss_mb"] = peak_rss / 2**20
            figures["drain"] = await system.drain_rate(n)

            first = 2 * n
            rate = figures["drain"] / 2
            figures["latency_rate"] = rate
            await system.enqueue_paced(first, config.latency_jobs, rate)
            total += config.latency_jobs
            await wait_until(lambda: _at_least(system, total), config.timeout, f"{name} latency jobs")
            latencies = await system.latencies(first, config.latency_jobs)
            figures["latency_p50_ms"] = percentile(latencies, 0.50) * 1000
            figures["latency_p99_ms"] = percentile(latencies, 0.99) * 1000

            first += config.latency_jobs
            await system.enqueue_delayed(first, delayed_due(config.delayed_jobs, config.delayed_ahead))
            total += config.delayed_jobs
            await wait_until(lambda: _at_least(system, total),
                             config.timeout + config.delayed_ahead[1], f"{name} delayed jobs")
            lateness = await system.lateness(first, config.delayed_jobs)
            figures["lateness_p50_ms"] = percentile(lateness, 0.50) * 1000
            figures["lateness_p99_ms"] = percentile(lateness, 0.99) * 1000
        if isinstance(system, Ours):
            await system.check_histories(total)
            figures["full_histories"] = total
    if name == "eventjobs" and config.signups.signups > 0:  # BENCH_SIGNUPS=0 leaves the api out
        figures.update(await measure_signups(config.signups, template, management, log))
    return figures


async def _at_least(system: Any, count: int) -> bool:
    return bool(await system.finished() >= count)


ROWS: tuple[tuple[str, str, bool], ...] = (
    # (figure, label, higher is better)
    ("enqueue_confirmed", "enqueue, publisher confirms (jobs/s)", True),
    ("enqueue_unconfirmed", "enqueue, no confirms (jobs/s)", True),
    ("enqueue_many", "enqueue_many, batches of 1,000 (jobs/s)", True),
    ("drain", "drain (jobs/s)", True),
    ("latency_p50_ms", "end-to-end p50 at 50 % drain (ms)", False),
    ("latency_p99_ms", "end-to-end p99 at 50 % drain (ms)", False),
    ("lateness_p50_ms", "delayed-job lateness p50 (ms)", False),
    ("lateness_p99_ms", "delayed-job lateness p99 (ms)", False),
    ("worker_rss_mb", "worker RSS, process tree (MiB)", False),
    ("signups_per_s", "sign-ups through the api, 32 clients (req/s)", True),
    ("signup_p99_ms", "sign-up p99 (ms)", False),
)


def medians(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    result: dict[str, dict[str, float]] = {}
    for run in rounds:
        for system, figures in run.items():
            for key, value in figures.items():
                result.setdefault(system, {}).setdefault(key, [])  # type: ignore[arg-type]
                result[system][key].append(value)  # type: ignore[attr-defined]
    return {system: {key: statistics.median(values) for key, values in figures.items()}  # type: ignore[arg-type]
            for system, figures in result.items()}


def table(summary: dict[str, dict[str, float]], systems: tuple[str, ...]) -> str:
    peers = [name for name in systems if name != "eventjobs"]
    header = f"{'':<42}" + "".join(f"{name:>12}" for name in systems)
    header += "".join(f"{'ours/' + name:>16}" for name in peers if "eventjobs" in systems)
    lines = [header]
    for key, label, _ in ROWS:
        cells = [summary.get(name, {}).get(key) for name in systems]
        if all(cell is None for cell in cells):
            continue
        line = f"{label:<42}" + "".join(f"{'-' if cell is None else f'{cell:,.0f}':>12}" for cell in cells)
        ours = summary.get("eventjobs", {}).get(key)
        if ours is None and key == "enqueue_unconfirmed":
            ours = summary.get("eventjobs", {}).get("enqueue_confirmed")  # ours has no unconfirmed mode
        for peer in peers:
            theirs = summary.get(peer, {}).get(key)
            ratio = "-" if ours is None or not theirs else f"{ours / theirs:.2f}"
            line += f"{ratio:>16}"
        lines.append(line)
    return "\n".join(lines)


async def run_bench(config: Config, out_dir: Path | None = None, template: str | None = None) -> dict[str, Any]:
    """Every system `config.rounds` times, alternately; the medians, printed and written as JSON.

    `template`: a migrated database to clone (a test's); by default one is made and dropped.
    """
    out_dir = out_dir or ROOT / "var" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    log = out_dir / f"{stamp}-workers.log"
    print(f"{config.jobs:,} no-op jobs x {config.rounds} rounds of {', '.join(config.systems)}; "
          f"{os.cpu_count()} CPUs; worker output in {log}", flush=True)
    own_template = template is None
    template = template or await create_template_database()
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        management = Management()
        for number in range(config.rounds):
            run: dict[str, dict[str, Any]] = {}
            for name in config.systems:
                started = time.monotonic()
                run[name] = await measure(name, config, template, management, log)
                print(f"round {number + 1} {name}: {time.monotonic() - started:.0f} s "
                      + json.dumps({key: round(value, 1) for key, value in run[name].items()}), flush=True)
            rounds.append(run)
    finally:
        if own_template:
            await drop_database(template)
    summary = medians(rounds)
    print(f"\nmedians of {config.rounds} rounds (a shared, busy machine: expect noise):")
    print(table(summary, config.systems))
    report = {"stamp": stamp, "cpus": os.cpu_count(), "config": asdict(config), "medians": summary,
              "rounds": rounds}
    path = out_dir / f"{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {path}")
    return report
