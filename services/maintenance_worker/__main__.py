"""python -m services.maintenance_worker: consumes jobs.maintenance and runs its handlers."""

from __future__ import annotations

import asyncio

from services.maintenance_worker.handlers import build_handlers
from shared.kinds import MAINTENANCE_SERVICE, platform_registry
from shared.lifecycle import run_service
from shared.service_catalog import MAINTENANCE_WORKER
from shared.settings import Settings
from shared.worker import run_worker


async def main(settings: Settings, stop: asyncio.Event) -> None:
    await run_worker(settings, stop, service=MAINTENANCE_SERVICE, registry=platform_registry(),
                     handlers=build_handlers(settings), default_concurrency=MAINTENANCE_WORKER.concurrency)


if __name__ == "__main__":
    run_service(MAINTENANCE_WORKER.name, main)
