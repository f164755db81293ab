"""Sign-ups through the api: `POST /api/users` from concurrent HTTP clients against the api as a real process.

On a fresh database and vhost: start `python -m services.api` (API_PROCESSES as configured), warm it up, then
send N sign-ups from C concurrent clients (each its own keep-alive connection, one request at a time) and time
them. Afterwards every sign-up must be written (its user row, its `email.welcome` job, published) and on the
email queue; with `mail`, the email worker is started against an SMTP sink and every welcome email must arrive.
The email worker does not run during the timed part.

    python -m tests.benchmarks.signups            # 2,000 sign-ups, 32 clients, 3 rounds
    BENCH_SIGNUPS=500 BENCH_API_PROCESSES=1 python -m tests.benchmarks.signups
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.benchmarks.systems import child
from tests.support.environment import (
    Management,
    TestEnvironment,
    create_template_database,
    drop_database,
    test_environment,
)
from tests.support.smtp import free_port, running_sink
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
EMAIL_QUEUE = "jobs.email"


@dataclass(frozen=True)
class SignupConfig:
    signups: int = 2_000
    clients: int = 32
    warmup: int = 200
    api_processes: int | None = None  # None: the api's own default (API_PROCESSES)
    mail: bool = True  # afterwards, run the email worker against a sink until every welcome email arrived

    @classmethod
    def from_env(cls) -> SignupConfig:
        processes = os.environ.get("BENCH_API_PROCESSES")
        return cls(
            signups=int(os.environ.get("BENCH_SIGNUPS", "2000")),
            clients=int(os.environ.get("BENCH_SIGNUP_CLIENTS", "32")),
            warmup=int(os.environ.get("BENCH_SIGNUP_WARMUP", "200")),
            api_processes=int(processes) if processes else None,
            mail=os.environ.get("BENCH_SIGNUP_MAIL", "1") not in ("0", "false", ""),
        )


class SignupsLost(AssertionError):
    """A sign-up answered 201 but its user, its job or its message is missing: the run fails."""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@asynccontextmanager
async def api_process(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m services.api`, stopped with SIGTERM at the end, which must exit 0."""
    async with child([sys.executable, "-m", "services.api"], env, log) as process:
        yield process
    if process.returncode != 0:
        raise AssertionError(f"the api exited with {process.returncode} (log: {log})")


async def ready(base: str, process: asyncio.subprocess.Process) -> bool:
    if process.returncode is not None:
        raise AssertionError(f"the api exited with {process.returncode} before it was ready")
    try:
        async with aiohttp.ClientSession() as http, http.get(
                f"{base}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def sign_up(base: str, first: int, count: int, clients: int) -> tuple[float, list[float], list[str]]:
    """Sign-ups first..first+count-1 from `clients` concurrent clients: (seconds, latencies, job ids)."""
    numbers = iter(range(first, first + count))
    latencies: list[float] = []
    job_ids: list[str] = []

    async def client() -> None:
        connector = aiohttp.TCPConnector(limit=1)  # one client, one keep-alive connection
        async with aiohttp.ClientSession(connector=connector) as http:
            for n in numbers:
                body = {"email": f"bench-{n}@example.com", "name": f"Bench User {n}"}
                started = time.perf_counter()
                async with http.post(f"{base}/api/users", json=body) as response:
                    answer = await response.read()
                    latencies.append(time.perf_counter() - started)
                    if response.status != 201:
                        raise AssertionError(f"sign-up {n}: {response.status} {answer[:300]!r}")
                job_ids.append(json.loads(answer)["welcome_job_id"])

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies, job_ids


async def check_written(env: TestEnvironment, management: Management, job_ids: list[str]) -> None:
    """Every sign-up's user row and its published welcome job are in Postgres, and its message in the queue."""
    connection = await asyncpg.connect(env.database_url)
    try:
        users = await connection.fetchval("SELECT count(*) FROM users WHERE email LIKE 'bench-%'")
        jobs = await connection.fetchval(
            """SELECT count(*) FROM jobs j JOIN users u ON u.email = j.args->>'email'
                WHERE j.id = ANY($1::uuid[]) AND j.kind = 'email.welcome' AND j.state = 'enqueued'
                  AND j.published_at IS NOT NULL""", job_ids)
    finally:
        await connection.close()
    expected = len(job_ids)
    if users != expected or jobs != expected:
        raise SignupsLost(f"{expected} sign-ups answered 201; {users} user rows, {jobs} published welcome jobs")

    async def queued() -> int:
        depth = int((await management.queue(env.vhost, EMAIL_QUEUE)).get("messages") or 0)
        return depth if depth >= expected else 0

    try:  # the management API's figures lag by a few seconds
        await eventually(queued, timeout=30, interval=0.5, what=f"{expected} messages on {EMAIL_QUEUE}")
    except AssertionError as error:
        raise SignupsLost(str(error)) from None


async def check_mailed(env: TestEnvironment, expected: int, log: Path) -> float:
    """The email worker against an SMTP sink until every welcome email has arrived; the seconds it took."""
    async with running_sink() as sink:
        worker_env = env.process_env(smtp_host="127.0.0.1", smtp_port=sink.port, heartbeat_seconds=5.0,
                                     job_lease_seconds=30.0, log_level="WARNING")
        async with child([sys.executable, "-m", "services.email_worker"], worker_env, log):
            started = time.perf_counter()
            await sink.wait_for(expected, timeout=300)
            seconds = time.perf_counter() - started
        recipients = {recipient for message in sink.messages for recipient in message.recipients}
    wanted = {f"bench-{n}@example.com" for n in range(expected)}
    if not wanted <= recipients:
        raise SignupsLost(f"{len(wanted - recipients)} welcome emails never arrived")
    return seconds


async def measure_signups(config: SignupConfig, template: str, management: Management, log: Path) -> dict[str, float]:
    """One round on a fresh database and vhost: sign-ups/s, p50 and p99 latency (ms), and the checks."""
    async with test_environment(template, management) as env:
        port = free_port()
        overrides: dict[str, Any] = {
            "api_host": "127.0.0.1", "api_port": port, "log_level": "WARNING",
            # production's heartbeat and limits: the per-client limit raised past this run (every client is
            # 127.0.0.1), the per-email one as shipped (each sign-up has its own address)
            "heartbeat_seconds": 5.0, "job_lease_seconds": 30.0,
            "rate_limit_client_requests": 1_000_000, "rate_limit_email_requests": 5,
        }
        process_env = env.process_env(**overrides)
        if config.api_processes is not None:
            process_env["API_PROCESSES"] = str(config.api_processes)
        base = f"http://127.0.0.1:{port}"
        async with api_process(process_env, log) as process:
            await eventually(lambda: ready(base, process), timeout=60, interval=0.2, what="the api's /readyz")
            await sign_up(base, 0, config.warmup, config.clients)
            cpu_started = time.process_time()
            seconds, latencies, job_ids = await sign_up(base, config.warmup, config.signups, config.clients)
            client_cpu = time.process_time() - cpu_started
        total = config.warmup + config.signups
        connection = await asyncpg.connect(env.database_url)
        try:
            all_ids = [str(row["id"]) for row in await connection.fetch(
                "SELECT id FROM jobs WHERE kind = 'email.welcome'")]
        finally:
            await connection.close()
        if len(all_ids) != total or not set(job_ids) <= set(all_ids):
            raise SignupsLost(f"{total} sign-ups answered 201; {len(all_ids)} welcome jobs")
        await check_written(env, management, all_ids)
        figures = {
            "signups_per_s": config.signups / seconds,
            "signup_p50_ms": percentile(latencies, 0.50) * 1000,
            "signup_p99_ms": percentile(latencies, 0.99) * 1000,
            "signup_client_cpu": client_cpu / seconds,  # cores the load generator itself used
        }
        if config.mail:
            figures["signup_mail_s"] = await check_mailed(env, total, log)
        return figures


async def main(config: SignupConfig, rounds: int) -> None:
    out_dir = ROOT / "var" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-signups.log"
    print(f"{config.signups:,} sign-ups from {config.clients} clients x {rounds} rounds; api processes: "
          f"{config.api_processes or 'default'}; {os.cpu_count()} CPUs; api output in {log}", flush=True)
    template = await create_template_database()
    results: list[dict[str, float]] = []
    try:
        management = Management()
        for number in range(rounds):
            figures = await measure_signups(config, template, management, log)
            results.append(figures)
            print(f"round {number + 1}: " + json.dumps({key: round(value, 2) for key, value in figures.items()}),
                  flush=True)
    finally:
        await drop_database(template)
    keys = results[0].keys()
    print("medians: " + json.dumps({key: round(statistics.median(r[key] for r in results), 2) for key in keys}))


if __name__ == "__main__":
    import uvloop

    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(SignupConfig.from_env(), int(os.environ.get("BENCH_ROUNDS", "3"))))
