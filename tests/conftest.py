from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import pytest

from shared.lifecycle import run_service  # noqa: F401  (imported so a broken import fails collection early)
from shared.messaging.consumer import Handler
from shared.registry import Registry
from shared.runtime import Runtime, open_runtime
from shared.settings import Settings
from shared.worker import run_worker
from tests.support.environment import (
    Management,
    TestEnvironment,
    create_template_database,
    drop_database,
    test_environment,
)
from tests.support.kinds import TEST_HANDLERS, TEST_SERVICE, test_registry
from tests.support.smtp import SmtpSink, running_sink


@pytest.fixture(scope="session")
def management() -> Management:
    return Management()


@pytest.fixture(scope="session")
async def template_database() -> AsyncIterator[str]:
    name = await create_template_database()
    yield name
    await drop_database(name)


@pytest.fixture
def queue_type() -> str:
    """QUEUE_TYPE of a test's environment; tests marked `both_queue_types` run under classic and quorum."""
    return "classic"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_queue_types"):
        metafunc.parametrize("queue_type", ["classic", "quorum"])


@pytest.fixture
async def env(template_database: str, management: Management, queue_type: str) -> AsyncIterator[TestEnvironment]:
    """A fresh database (cloned from the migrated template) and a fresh RabbitMQ vhost."""
    async with test_environment(template_database, management) as environment:
        environment.overrides["queue_type"] = queue_type
        yield environment


@pytest.fixture
async def db(env: TestEnvironment) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test's database, for reading what the code under test wrote."""
    connection = await asyncpg.connect(env.database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    """An aiosmtpd server in the test that records what it receives."""
    async with running_sink() as running:
        yield running


@pytest.fixture
def settings(env: TestEnvironment) -> Settings:
    return env.settings()


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with open_runtime(settings, test_registry()) as opened:
        yield opened


StartWorker = Callable[..., Awaitable[asyncio.Event]]


@pytest.fixture
async def start_worker(env: TestEnvironment) -> AsyncIterator[StartWorker]:
    """Start in-process workers; each is stopped (gracefully) when the test ends."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(
        *, registry: Registry | None = None, handlers: Mapping[str, Handler] | None = None,
        service: str = TEST_SERVICE, concurrency: int = 10, **overrides: Any,
    ) -> asyncio.Event:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_worker(env.settings(**overrides), stop, service=service, registry=registry or test_registry(),
                       handlers=handlers or TEST_HANDLERS, default_concurrency=concurrency)
        )
        running.append((stop, task))
        return stop

    yield start
    for stop, _ in running:
        stop.set()
    for _, task in running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
