"""The api under test and what it left behind: rows per table, messages waiting per queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from shared.messaging.topology import work_queue
from tests.support.environment import TestEnvironment

WRITTEN_TABLES = ("users", "events", "participants", "jobs", "job_states", "emails")


@asynccontextmanager
async def platform_api(env: TestEnvironment, **overrides: Any) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(env.settings(**overrides)))) as client:
        yield client


async def row_counts(env: TestEnvironment) -> dict[str, int]:
    connection = await asyncpg.connect(env.database_url)
    try:
        return {table: await connection.fetchval(f"SELECT count(*) FROM {table}") for table in WRITTEN_TABLES}
    finally:
        await connection.close()


async def queue_depth(env: TestEnvironment, service: str = "email") -> int:
    """Ready messages in the service's queue, live from a passive declare (management figures lag)."""
    connection = await aio_pika.connect(env.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(work_queue(service), passive=True)
        count = queue.declaration_result.message_count
        assert count is not None
        return count
    finally:
        await connection.close()
