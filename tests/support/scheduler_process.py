"""A scheduler process that knows the test kinds: `python -m tests.support.scheduler_process`."""

from __future__ import annotations

import asyncio

from services.scheduler.__main__ import main as scheduler_main
from shared.lifecycle import run_service
from shared.settings import Settings
from tests.support.scheduler import scheduler_registry


async def main(settings: Settings, stop: asyncio.Event) -> None:
    await scheduler_main(settings, stop, scheduler_registry())


if __name__ == "__main__":
    run_service("scheduler", main)
