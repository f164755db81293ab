"""What wakes the scheduler's loops: Postgres notifications, a timer, or the stop event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg

log = logging.getLogger(__name__)

JOBS_SCHEDULED = "jobs_scheduled"  # the jobs insert trigger, with the new job's run_at
RECURRING_CHANGED = "recurring_jobs_changed"  # the recurring_jobs trigger, on definition changes


async def wait_any(events: Sequence[asyncio.Event], timeout: float) -> None:
    """Return when one of the events is set or after `timeout` seconds, whichever comes first."""
    if any(event.is_set() for event in events):
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)


class Notifications:
    """One LISTEN connection (pooled connections lose their listeners) that sets an event per channel.

    The connection is re-opened when it drops; every event is then set, since notifications sent
    meanwhile are lost and the loops must look at the tables again.
    """

    def __init__(self, database_url: str, channels: Sequence[str]) -> None:
        self.database_url = database_url
        self.events = {channel: asyncio.Event() for channel in channels}
        self._connection: asyncpg.Connection | None = None

    def event(self, channel: str) -> asyncio.Event:
        return self.events[channel]

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    def _notified(self, _connection: object, _pid: int, channel: str, _payload: object) -> None:
        self.events[channel].set()

    async def connect(self) -> None:
        connection = await asyncpg.connect(self.database_url)
        try:
            for channel in self.events:
                await connection.add_listener(channel, self._notified)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        for event in self.events.values():
            event.set()

    async def keep_listening(self, stop: asyncio.Event, check_every: float) -> None:
        while not stop.is_set():
            if not self.listening:
                try:
                    await self.connect()
                    log.info("listening for notifications", extra={"channels": sorted(self.events)})
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                    log.warning("cannot listen for notifications; polling meanwhile", extra={"error": repr(exc)})
            await wait_any([stop], check_every)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._connection.close(timeout=5)
            self._connection = None
