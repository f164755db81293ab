"""python -m services.scheduler: promotes due delayed jobs, relays the outbox, fires recurring jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack

from services.scheduler.due_jobs import DuePromoter, OutboxRelay
from services.scheduler.recurring import RecurringScheduler
from services.scheduler.wakeup import JOBS_SCHEDULED, RECURRING_CHANGED, Notifications
from shared.job_metrics import serve_metrics
from shared.kinds import platform_registry
from shared.lifecycle import heartbeat, new_server_id, run_service
from shared.registry import Registry
from shared.runtime import open_runtime, watch_dependencies
from shared.settings import Settings

log = logging.getLogger("services.scheduler")  # not "__main__" when run with -m

SERVICE = "scheduler"


async def main(settings: Settings, stop: asyncio.Event, registry: Registry | None = None) -> None:
    """Run until `stop` is set. Tests pass a registry with their own kinds."""
    server_id = new_server_id(SERVICE)
    async with AsyncExitStack() as stack:
        runtime = await stack.enter_async_context(open_runtime(settings, registry or platform_registry(),
                                                               pool_size=5))
        await stack.enter_async_context(
            heartbeat(runtime.pool, server_id, service=SERVICE, queues=[], concurrency=0,
                      interval=settings.heartbeat_seconds)
        )
        await stack.enter_async_context(serve_metrics(settings.metrics_port, settings.metrics_host))
        await stack.enter_async_context(watch_dependencies(runtime, stop))
        notifications = Notifications(settings.database_url, (JOBS_SCHEDULED, RECURRING_CHANGED))
        stack.push_async_callback(notifications.close)
        loops = {
            "notifications": notifications.keep_listening(stop, settings.scheduler_poll_seconds),
            "due jobs": DuePromoter(runtime, notifications.event(JOBS_SCHEDULED), stop).run(),
            "outbox relay": OutboxRelay(runtime, stop).run(),
            "recurring jobs": RecurringScheduler(runtime, notifications.event(RECURRING_CHANGED), stop).run(),
        }
        tasks = [asyncio.create_task(loop, name=name) for name, loop in loops.items()]
        log.info("scheduler ready", extra={"server_id": server_id})
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # a loop that ended on its own is a bug: stop the others and report it
        stopping.cancel()
        _, unfinished = await asyncio.wait(tasks, timeout=settings.shutdown_timeout_seconds)
        for task in unfinished:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*unfinished, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error("scheduler loop crashed", extra={"loop": task.get_name()}, exc_info=task.exception())
                raise task.exception()  # type: ignore[misc]


if __name__ == "__main__":
    run_service(SERVICE, main)
