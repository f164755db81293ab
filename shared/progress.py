"""A running job's progress (`await context.progress(done, total, message)`), stored on its row at most every
PROGRESS_INTERVAL_MS so a handler can report each item without a write per item. The last report of a run is
stored when the handler ends, whatever the interval. Only the holder of the job's lease writes it."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import asyncpg

log = logging.getLogger(__name__)

MESSAGE_MAX = 500


@dataclass(frozen=True)
class Progress:
    done: int
    total: int | None
    message: str | None


class ProgressReporter:
    def __init__(self, pool: asyncpg.Pool, job_id: uuid.UUID, worker: str, attempt: int,
                 interval_seconds: float) -> None:
        self.pool = pool
        self.job_id = job_id
        self.worker = worker
        self.attempt = attempt
        self.interval_seconds = interval_seconds
        self._stored_at = float("-inf")
        self._pending: Progress | None = None

    async def report(self, done: int, total: int | None = None, message: str | None = None) -> None:
        if done < 0 or (total is not None and total < 0):
            raise ValueError("progress counts cannot be negative")
        self._pending = Progress(done, total, message[:MESSAGE_MAX] if message else message)
        if time.monotonic() - self._stored_at >= self.interval_seconds:
            await self.flush()

    async def flush(self) -> None:
        """Store the latest report not stored yet. Never fails the job: progress is informative."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self._stored_at = time.monotonic()
        try:
            await self.pool.execute(
                """UPDATE jobs SET progress_done = $4, progress_total = $5, progress_message = $6,
                                  progress_at = now()
                    WHERE id = $1 AND state = 'processing' AND worker = $2 AND attempt = $3""",
                self.job_id, self.worker, self.attempt, pending.done, pending.total, pending.message,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("progress not stored", extra={"job_id": str(self.job_id), "error": repr(exc)})
