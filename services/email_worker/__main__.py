"""python -m services.email_worker: consumes jobs.email and runs its handlers."""

from __future__ import annotations

import asyncio

from services.email_worker.handlers import build_handlers
from shared.kinds import EMAIL_SERVICE, platform_registry
from shared.lifecycle import run_service
from shared.service_catalog import EMAIL_WORKER
from shared.settings import Settings
from shared.worker import run_worker


async def main(settings: Settings, stop: asyncio.Event) -> None:
    await run_worker(settings, stop, service=EMAIL_SERVICE, registry=platform_registry(),
                     handlers=build_handlers(settings), default_concurrency=EMAIL_WORKER.concurrency)


if __name__ == "__main__":
    run_service(EMAIL_WORKER.name, main)
