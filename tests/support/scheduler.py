"""The scheduler for tests: in-process instances with the test kinds, and their log lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from services.scheduler.__main__ import main as scheduler_main
from shared.kinds import PLATFORM_KINDS
from shared.registry import Registry
from tests.support.environment import TestEnvironment
from tests.support.kinds import test_registry


def scheduler_registry() -> Registry:
    """Test kinds for the recurring jobs of tests, platform kinds for the seeded ones."""
    return test_registry(*PLATFORM_KINDS)


@dataclass
class RunningScheduler:
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, 30)


StartScheduler = Callable[..., Awaitable[RunningScheduler]]


@pytest.fixture(name="start_scheduler")
async def start_scheduler_fixture(env: TestEnvironment) -> AsyncIterator[StartScheduler]:
    """Start in-process schedulers (settings overrides as keywords); all are stopped at the end."""
    running: list[RunningScheduler] = []

    async def start(**overrides: Any) -> RunningScheduler:
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler_main(env.settings(**overrides), stop, scheduler_registry()))
        running.append(RunningScheduler(stop, task))
        return running[-1]

    yield start
    for scheduler in running:
        scheduler.stop_event.set()
    for scheduler in running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(scheduler.task, 30)


class LogRecorder(logging.Handler):
    """The scheduler's log records, with their `extra` fields, as a test can wait on them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def matching(self, message: str, **fields: Any) -> list[logging.LogRecord]:
        return [
            record for record in self.records
            if record.getMessage() == message
            and all(getattr(record, name, None) == value for name, value in fields.items())
        ]


@pytest.fixture(name="scheduler_logs")
def scheduler_logs_fixture() -> Iterator[LogRecorder]:
    logger = logging.getLogger("services.scheduler")
    recorder = LogRecorder()
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(recorder)
    yield recorder
    logger.removeHandler(recorder)
    logger.setLevel(previous)
