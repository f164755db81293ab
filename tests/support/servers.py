"""Stop and start the real PostgreSQL and RabbitMQ servers, for fault tests; always restored and healthy after.

These act on the machine's servers, not on a test's own database or vhost.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import aiohttp
import asyncpg

from tests.support.environment import MANAGEMENT_URL, Management, database_url

HEALTHY_WITHIN_SECONDS = 120.0


async def run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {output.decode(errors='replace')}")


def postgres_cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions:
        raise RuntimeError("no Debian PostgreSQL cluster in /etc/postgresql to restart")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


async def wait_until(probe_name: str, probe: Callable[[], Awaitable[None]]) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_SECONDS
    while True:
        try:
            await probe()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{probe_name} not healthy after {HEALTHY_WITHIN_SECONDS}s: {exc!r}") from exc
        await asyncio.sleep(0.2)


async def postgres_answers() -> None:
    connection = await asyncpg.connect(database_url("postgres"), timeout=2)
    try:
        await connection.fetchval("SELECT 1")
    finally:
        await connection.close()


async def rabbitmq_answers() -> None:
    await Management(MANAGEMENT_URL).request("GET", "overview")
    # The management API answers a moment before AMQP does: check both.
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", 5672), 2)
    writer.close()
    await writer.wait_closed()


@asynccontextmanager
async def postgres_stopped() -> AsyncIterator[None]:
    """PostgreSQL stopped (fast shutdown: clients are disconnected) for the body, then started and healthy."""
    await run(*postgres_cluster(), "stop", "-m", "fast")
    try:
        yield
    finally:
        await run(*postgres_cluster(), "start")
        await wait_until("PostgreSQL", postgres_answers)


@asynccontextmanager
async def rabbitmq_stopped() -> AsyncIterator[None]:
    """The RabbitMQ application stopped (`rabbitmqctl stop_app`) for the body, then started and healthy."""
    await run("rabbitmqctl", "stop_app")
    try:
        yield
    finally:
        await run("rabbitmqctl", "start_app")
        await run("rabbitmqctl", "await_startup")
        await wait_until("RabbitMQ", rabbitmq_answers)


async def close_connections(vhost: str, name_prefix: str) -> int:
    """Force-close the AMQP connections of `vhost` whose client-given name starts with `name_prefix`."""
    management = Management(MANAGEMENT_URL)
    connections = await management.request("GET", f"vhosts/{quote(vhost, safe='')}/connections")
    closed = 0
    for connection in connections:
        name = (connection.get("client_properties") or {}).get("connection_name") or ""
        if name.startswith(name_prefix):
            async with aiohttp.ClientSession(headers=management.headers) as session, session.delete(
                f"{management.base}/api/connections/{connection['name']}",
                headers={"X-Reason": "fault test: connection cut"},
            ) as response:
                if response.status < 400:
                    closed += 1
    return closed
