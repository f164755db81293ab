"""A background task of the api: parked copies of jobs that have since succeeded or been deleted are removed.

Requeues and deletes by an operator remove their jobs' copies at once (shared/job_actions.py); this
catches the rest, such as a job parked after unexpected errors that the sweeper later ran to success.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.api.http.app_keys import RUNTIME
from shared import parking_lot

log = logging.getLogger(__name__)


async def sweep_forever(app: web.Application) -> None:
    runtime = app[RUNTIME]
    while True:
        await asyncio.sleep(runtime.settings.parked_sweep_seconds)
        try:
            async with asyncio.timeout(max(runtime.settings.parked_sweep_seconds, 10.0)):
                await parking_lot.forget_settled(runtime.broker, runtime.pool,
                                                 quorum=runtime.settings.queue_type == "quorum")
        except Exception:  # RabbitMQ or Postgres away: the next round tries again
            log.warning("parking-lot sweep failed", exc_info=True)


def install(app: web.Application) -> None:
    """Runs after the runtime is open (cleanup_ctx order) and stops before it closes."""

    async def sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sweep_forever(app), name="parked-sweeper")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sweeper_ctx)
