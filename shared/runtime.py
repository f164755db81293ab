"""The resources every process holds (pool, broker, client, registry) opened in one place, and whether its
dependencies answer. The api, the scheduler and the workers all start from `open_runtime`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg

from shared.client import JobClient, policy_for
from shared.db.migrate import migrate
from shared.db.pool import open_pool
from shared.lifecycle import exit_when_dependencies_lost
from shared.messaging.broker import Broker
from shared.messaging.topology import Topology, build_topology
from shared.registry import Registry
from shared.retry import RetryPolicy
from shared.settings import Settings


def default_retry(settings: Settings) -> RetryPolicy:
    return RetryPolicy(settings.retry_attempts, settings.retry_delays, settings.retry_jitter)


def topology_for(registry: Registry, settings: Settings) -> Topology:
    """Service queues, and one delay queue per delay any policy may wait, jitter buckets included."""
    default = default_retry(settings)
    delays = {delay for policy in (default, *(policy_for(kind, default) for kind in registry))
              for delay in policy.queue_delays()}
    return build_topology(registry.services(), delays, settings.queue_type)


@dataclass
class Runtime:
    """The shared resources of a process: what the api, scheduler and workers all hold."""

    settings: Settings
    pool: asyncpg.Pool
    broker: Broker
    client: JobClient
    registry: Registry


@asynccontextmanager
async def open_runtime(
    settings: Settings, registry: Registry, *, pool_size: int = 10, connection_name: str | None = None
) -> AsyncIterator[Runtime]:
    await migrate(settings.database_url)
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(settings.database_url, max_size=pool_size))
        broker = Broker(settings.amqp_url, topology_for(registry, settings),
                        heartbeat_seconds=settings.amqp_heartbeat_seconds, name=connection_name)
        await broker.connect()
        stack.push_async_callback(broker.close)
        client = JobClient(pool, broker, registry, default_retry(settings))
        stack.push_async_callback(client.close)
        yield Runtime(settings, pool, broker, client, registry)


async def unreachable_dependencies(runtime: Runtime) -> list[str]:
    """The dependencies not answering right now: what /readyz reports and what the watchdog counts."""
    names = [] if runtime.broker.is_connected else ["rabbitmq"]
    try:
        await runtime.pool.fetchval("SELECT 1", timeout=2)
    except Exception:  # any failure to answer is "unreachable" here; the reason is logged where it matters
        names.append("postgres")
    return names


def watch_dependencies(runtime: Runtime, stop: asyncio.Event) -> contextlib.AbstractAsyncContextManager[None]:
    return exit_when_dependencies_lost(
        lambda: unreachable_dependencies(runtime), stop, interval=runtime.settings.heartbeat_seconds,
        limit=runtime.settings.dependency_timeout_seconds,
    )
