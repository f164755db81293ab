"""Confirmed publishes stamped `published_at` a moment later, together, off the caller's path.

The stamp only tells the outbox relay to leave a committed row alone; the job's message is on its queue once
RabbitMQ confirmed it. So an enqueue returns on the confirm, and the stamps of everything confirmed within
MARK_AFTER_SECONDS go out as one statement. By then most jobs have been claimed, and a claim stamps its row
itself (shared.db.jobs.claim_many), so in steady state the statement finds nothing left to write: one UPDATE
of twenty indexes and one commit per job fewer. A stamp that is lost (the process dies first, Postgres is
away) costs one duplicate publish by the relay, which the claim turns away, as when a process dies between
the confirm and a stamp written at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable

import asyncpg

from shared.db import jobs as job_queries

log = logging.getLogger(__name__)

# Well under the relay's grace (OUTBOX_GRACE_SECONDS, 5 s by default), so the relay never races a stamp.
MARK_AFTER_SECONDS = 0.25
MARK_BATCH = 1000


class PublishedMarks:
    def __init__(self, pool: asyncpg.Pool, *, after_seconds: float = MARK_AFTER_SECONDS) -> None:
        self._pool = pool
        self._after_seconds = after_seconds
        self._pending: list[uuid.UUID] = []
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()  # close(): stamp what is pending without waiting out the delay

    def add(self, job_ids: Iterable[uuid.UUID]) -> None:
        self._pending.extend(job_ids)
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="published_at stamps")

    async def close(self) -> None:
        """Stamp everything still pending (a stopping process), then return."""
        self._now.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), self._after_seconds)
            batch, self._pending = self._pending, []
            for start in range(0, len(batch), MARK_BATCH):
                chunk = batch[start:start + MARK_BATCH]
                try:
                    await job_queries.mark_published(self._pool, chunk)
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("published_at not stamped; the outbox relay will publish these jobs again",
                                extra={"jobs": len(chunk), "error": repr(exc)})
