"""Process lifecycle: signals to a stop event, heartbeats, the resources of a service in one stack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvloop

from shared.db import servers
from shared.logs import configure_logging
from shared.registry import HandlerMismatch
from shared.settings import Settings, load_settings

log = logging.getLogger(__name__)


def new_server_id(service: str) -> str:
    return f"{service}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def dead_after(settings: Settings) -> float:
    """A process that missed three heartbeats in a row is gone."""
    return settings.heartbeat_seconds * 3


@asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run `work` as a task for the body of the `async with`; cancelled and awaited when it ends."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def heartbeat(
    pool: asyncpg.Pool, server_id: str, *, service: str, queues: Sequence[str], concurrency: int,
    interval: float,
) -> AsyncIterator[None]:
    async def beat() -> None:
        await servers.beat(pool, server_id, service=service, host=socket.gethostname(), pid=os.getpid(),
                           queues=queues, concurrency=concurrency)

    async def beat_forever() -> None:
        while True:
            await asyncio.sleep(interval)  # the first beat is the one below, before the service starts
            try:
                await beat()
            except Exception:  # a lost connection must not end the heartbeat, and with it the process
                log.warning("heartbeat failed", exc_info=True)

    await beat()
    try:
        async with in_background(beat_forever(), f"heartbeat {server_id}"):
            yield
    finally:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            await servers.remove(pool, server_id)


class DependencyLost(RuntimeError):
    """Postgres or RabbitMQ stayed unreachable longer than DEPENDENCY_TIMEOUT_SECONDS: the process exits
    non-zero so that its orchestrator restarts it, instead of idling on half a connection forever."""


@asynccontextmanager
async def exit_when_dependencies_lost(
    unreachable: Callable[[], Awaitable[list[str]]], stop: asyncio.Event, *, interval: float, limit: float
) -> AsyncIterator[None]:
    """Watch `unreachable()` (the names of the dependencies not answering) every `interval`; after `limit`
    seconds of any of them failing, set `stop` (a normal drain) and raise DependencyLost once drained."""
    lost: list[str] = []

    async def watch() -> None:
        since: float | None = None
        while True:
            await asyncio.sleep(interval)
            names = await unreachable()
            now = asyncio.get_running_loop().time()
            since = None if not names else (since if since is not None else now)
            if since is not None and now - since > limit:
                log.error("dependencies unreachable for too long; stopping", extra={"dependencies": names,
                                                                                     "seconds": limit})
                lost.extend(names)
                stop.set()
                return

    async with in_background(watch(), "dependency watchdog"):
        yield
    if lost:
        raise DependencyLost(f"unreachable for more than {limit:g}s: {', '.join(lost)}")


def run_service(name: str, main: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Entry point of every service: settings, JSON logs, SIGTERM/SIGINT → the stop event."""
    settings = load_settings()
    configure_logging(name, settings.log_level)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("starting", extra={"pid": os.getpid()})
        await main(settings, stop)
        log.info("stopped")

    # asyncio.Runner, not uvloop.run: the same code path for both loops, and the choice stays a setting.
    loop_factory = uvloop.new_event_loop if settings.event_loop == "uvloop" else None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as loop_runner:
            loop_runner.run(runner())
    except DependencyLost as exc:
        log.error("exiting: %s", exc)
        raise SystemExit(3) from None
    except HandlerMismatch as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(2) from None
