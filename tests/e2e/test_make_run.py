"""The README's first command: `make run` brings the whole system up and says how to use it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.support.environment import TestEnvironment
from tests.support.smtp import free_port
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


async def read_until(stream: asyncio.StreamReader, marker: str, timeout: float) -> str:
    """Everything printed up to and including the line holding `marker`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(marker in line for line in seen):
        remaining = deadline - time.monotonic()
        line = await asyncio.wait_for(stream.readline(), max(remaining, 0.01))
        if not line:
            raise AssertionError(f"`make run` ended before printing {marker!r}:\n" + "".join(seen))
        seen.append(line.decode(errors="replace"))
    return "".join(seen)


def free_port_run(count: int) -> int:
    """The first of `count` consecutive ports free right now (the workers' METRICS_PORT, N+1, N+2)."""
    for _ in range(50):
        base = free_port()
        probes = []
        try:
            for port in range(base, base + count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise AssertionError(f"no {count} consecutive free ports")


async def test_make_run_starts_everything_prints_where_to_look_and_stops_on_ctrl_c(
    env: TestEnvironment, tmp_path: Path
) -> None:
    api_port, smtp_port, metrics_port = free_port(), free_port(), free_port_run(3)
    process_env = env.process_env(api_port=api_port, smtp_port=smtp_port)
    process_env.update(MAIL_DIR=str(tmp_path / "mail"), PYTHONUNBUFFERED="1", METRICS_PORT=str(metrics_port))
    # Its own session, so Ctrl-C can be sent to the whole group as a terminal would.
    make = await asyncio.create_subprocess_exec(
        "make", "--no-print-directory", "run", cwd=ROOT, env=process_env, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert make.stdout is not None
        printed = await read_until(make.stdout, "Ctrl-C stops everything", timeout=120)
        base = f"http://127.0.0.1:{api_port}"
        for line in (f"{base}/api/docs", f"{base}/jobs", "RabbitMQ UI", str(tmp_path / "mail")):
            assert line in printed, printed
        assert re.search(rf"curl -X POST {re.escape(base)}/api/users", printed), printed

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
            async with http.get(f"{base}/", allow_redirects=False) as response:
                assert response.headers["Location"] == "/jobs"
            # The scheduler and the two workers serve their own /metrics and /healthz.
            for offset, family in enumerate(("eventjobs_scheduler_promoted", "eventjobs_jobs_processed",
                                             "eventjobs_jobs_processed")):
                assert f"http://127.0.0.1:{metrics_port + offset}/metrics" in printed, printed
                async with http.get(f"http://127.0.0.1:{metrics_port + offset}/metrics") as response:
                    assert family in await response.text()
                async with http.get(f"http://127.0.0.1:{metrics_port + offset}/healthz") as response:
                    assert response.status == 200
            user = {"email": "newcomer@example.com", "name": "New"}
            async with http.post(f"{base}/api/users", json=user) as response:
                assert response.status == 201, await response.text()

        async def welcome_mail() -> list[Path]:
            return [path for path in (tmp_path / "mail").glob("*.eml") if b"newcomer@example.com" in path.read_bytes()]

        await eventually(welcome_mail, timeout=60, what="the welcome email in the printed mail folder")
    finally:
        if make.returncode is None:
            os.killpg(make.pid, signal.SIGINT)
        await asyncio.wait_for(make.wait(), 60)

    async def services_gone() -> bool:
        return await env_servers(env) == 0

    await eventually(services_gone, timeout=30, what="every service to stop and remove its heartbeat")


async def env_servers(env: TestEnvironment) -> int:
    connection = await asyncpg.connect(env.database_url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM servers")
        return count
    finally:
        await connection.close()


async def test_make_run_with_its_api_port_taken_says_which_variable_to_change_and_fails(
    env: TestEnvironment, tmp_path: Path
) -> None:
    api_port, smtp_port = free_port(), free_port()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", api_port))
    squatter.listen()
    process_env = env.process_env(api_port=api_port, smtp_port=smtp_port)
    process_env.update(MAIL_DIR=str(tmp_path / "mail"), PYTHONUNBUFFERED="1")
    try:
        make = await asyncio.create_subprocess_exec(
            "make", "--no-print-directory", "run", cwd=ROOT, env=process_env, start_new_session=True,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(make.communicate(), 120)
    finally:
        squatter.close()

    assert make.returncode != 0
    ours = [line for line in stderr.decode().splitlines() if line.startswith("make run:")]
    assert len(ours) == 1, stderr.decode()
    assert "API_PORT" in ours[0] and str(api_port) in ours[0] and "already in use" in ours[0]
    assert "Traceback" not in stderr.decode()
    assert "eventjobs is running" not in stdout.decode()
    assert await env_servers(env) == 0  # nothing was started
