"""A worker process serving the test kinds: `python -m tests.support.worker`, for kill -9 tests."""

from __future__ import annotations

import asyncio

from shared.lifecycle import run_service
from shared.settings import Settings
from shared.worker import run_worker
from tests.support.kinds import TEST_HANDLERS, TEST_SERVICE, test_registry


async def main(settings: Settings, stop: asyncio.Event) -> None:
    await run_worker(settings, stop, service=TEST_SERVICE, registry=test_registry(),
                     handlers=TEST_HANDLERS, default_concurrency=10)


if __name__ == "__main__":
    run_service("test-worker", main)
