"""The api under test and what it left behind: rows per table, messages waiting per queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from shared.messaging.topology import work_queue
from shared.registry import Registry
from tests.support.broker_probe import ready_count
from tests.support.environment import TestEnvironment

WRITTEN_TABLES = ("users", "events", "participants", "jobs", "job_states", "emails")


@asynccontextmanager
async def platform_api(
    env: TestEnvironment, registry: Registry | None = None, **overrides: Any
) -> AsyncIterator[TestClient[Any, Any]]:
    """The app in-process on a test server; the platform's job kinds unless given another registry."""
    async with TestClient(TestServer(create_app(env.settings(**overrides), registry=registry))) as client:
        yield client


async def row_counts(env: TestEnvironment) -> dict[str, int]:
    connection = await asyncpg.connect(env.database_url)
    try:
        return {table: await connection.fetchval(f"SELECT count(*) FROM {table}") for table in WRITTEN_TABLES}
    finally:
        await connection.close()


async def queue_depth(env: TestEnvironment, service: str = "email") -> int:
    """Ready messages in the service's queue."""
    return await ready_count(env.amqp_url, work_queue(service))
