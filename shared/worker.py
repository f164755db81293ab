"""A worker service assembled: runtime, job log flusher, consumer, heartbeat, metrics; drained on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg

from shared import job_metrics
from shared.db import jobs as job_queries
from shared.job_metrics import serve_metrics
from shared.lifecycle import heartbeat, in_background, new_server_id
from shared.limits import effective_limits
from shared.logs import JobLogBuffer
from shared.messaging.consumer import Consumer, Handler
from shared.messaging.topology import work_queue
from shared.registry import Registry, check_handlers
from shared.runtime import open_runtime, watch_dependencies
from shared.settings import Settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def job_log_flusher(pool: asyncpg.Pool, interval: float = 0.5) -> AsyncIterator[None]:
    """Handlers' log lines reach job_logs in batches, off the hot path."""
    buffer = JobLogBuffer()
    logging.getLogger().addHandler(buffer)
    # Handlers log through "job.<kind>"; their info lines belong in job_logs whatever the root level.
    logging.getLogger("job").setLevel(logging.INFO)

    async def flush() -> None:
        rows = buffer.take()
        if rows:
            try:
                await job_queries.insert_logs(pool, rows)
            except (OSError, asyncpg.PostgresError):
                log.warning("could not store %d job log lines", len(rows), exc_info=True)

    async def flush_forever() -> None:
        while True:
            await asyncio.sleep(interval)
            await flush()

    try:
        async with in_background(flush_forever(), "job log flusher"):
            yield
    finally:
        logging.getLogger().removeHandler(buffer)
        await flush()


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    service: str,
    registry: Registry,
    handlers: Mapping[str, Handler],
    default_concurrency: int,
) -> None:
    # Before any connection: a kind without a handler would otherwise turn every such job into poison.
    check_handlers(registry, service, handlers)
    concurrency = settings.concurrency_for(default_concurrency)
    prefetch = settings.prefetch_for(default_concurrency)
    server_id = new_server_id(service)
    async with AsyncExitStack() as stack:
        runtime = await stack.enter_async_context(
            open_runtime(settings, registry, pool_size=min(concurrency + 4, 40), connection_name=server_id)
        )
        await stack.enter_async_context(watch_dependencies(runtime, stop))
        await stack.enter_async_context(job_log_flusher(runtime.pool))
        consumer = Consumer(
            service=service, worker_id=server_id, broker=runtime.broker, pool=runtime.pool,
            client=runtime.client, registry=registry, handlers=handlers,
            default_retry=runtime.client.default_retry, prefetch=prefetch, concurrency=concurrency,
            lease_seconds=settings.job_lease_seconds, renew_every_seconds=settings.heartbeat_seconds,
            fence_after_seconds=settings.lease_fence_seconds(),
            limits=effective_limits(registry, settings),
            progress_interval_seconds=settings.progress_interval_ms / 1000,
        )
        await consumer.start()
        job_metrics.IN_FLIGHT.sources[service] = lambda: consumer.inflight
        await stack.enter_async_context(serve_metrics(settings.metrics_port, settings.metrics_host))
        # The first heartbeat says "consuming": health checks and the dashboard read it as ready.
        await stack.enter_async_context(
            heartbeat(runtime.pool, server_id, service=service, queues=[work_queue(service)],
                      concurrency=concurrency, interval=settings.heartbeat_seconds)
        )
        log.info("worker ready", extra={"service": service, "server_id": server_id,
                                        "concurrency": concurrency, "prefetch": prefetch})
        await stop.wait()
        log.info("stopping: draining in-flight jobs", extra={"inflight": consumer.inflight})
        await consumer.stop(settings.shutdown_timeout_seconds)
