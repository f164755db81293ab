"""Delayed jobs made runnable when due, and the outbox relay for publishes that never confirmed."""

from __future__ import annotations

import asyncio
import logging
import statistics
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from services.scheduler.wakeup import wait_any
from shared import job_metrics
from shared.db import jobs as job_queries
from shared.db.pool import acquire
from shared.messaging.broker import BrokerUnavailable
from shared.messaging.envelope import Envelope
from shared.runtime import Runtime

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# Promoted batches whose publish may still be waiting for confirms while the next due jobs are promoted.
MAX_PUBLISHING = 4
# The wait for the next due job is measured by Postgres' clock, so a clock of ours that runs ahead or behind
# never wakes the promoter early or late. Added to it: the event loop's timers are millisecond-grained and may
# fire up to a millisecond early, and a promoter that wakes before the job is due pays a whole extra round.
TIMER_MARGIN_SECONDS = 0.001
# The shortest wait: it bounds polling while a due job cannot be promoted yet (another scheduler holds its row).
MIN_WAIT_SECONDS = 0.002
# Errors that mean Postgres or RabbitMQ is away for now; the loops wait and go on.
TRANSIENT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, BrokerUnavailable)
# Anything else is a bug or a bad row: logged with its traceback, and the loop goes on after a pause
# rather than taking the whole scheduler (and the other loops) down with it.
UNEXPECTED_ERROR_PAUSE_SECONDS = 5.0
# A retry whose delayed message is this late has lost it; also the wait before republishing it again.
OVERDUE_RETRY_SECONDS = 60.0


def _milliseconds(seconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "lateness_ms_p50": round(statistics.median(ordered) * 1000, 1),
        "lateness_ms_max": round(ordered[-1] * 1000, 1),
    }


class DuePromoter:
    """Moves due `scheduled` jobs to `enqueued` and publishes them; never before their run_at."""

    def __init__(self, runtime: Runtime, woken: asyncio.Event, stop: asyncio.Event) -> None:
        self.runtime = runtime
        self.woken = woken
        self.stop = stop
        self.poll_seconds = runtime.settings.scheduler_poll_seconds
        # Publishes of promoted batches still waiting for their confirms and published_at marks.
        self._publishing: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while not self.stop.is_set():
            self.woken.clear()
            try:
                await self.promote_all()
                timeout = await self.time_to_next_due()
            except TRANSIENT_ERRORS as exc:
                log.warning("promoting due jobs failed; retrying", extra={"error": repr(exc)})
                timeout = self.poll_seconds
            except Exception:
                log.exception("promoting due jobs failed unexpectedly; retrying")
                timeout = UNEXPECTED_ERROR_PAUSE_SECONDS
            await wait_any([self.woken, self.stop], timeout)
        if self._publishing:  # bounded: what is not confirmed by then is left to the outbox relay
            await asyncio.wait(self._publishing, timeout=self.runtime.broker.publish_timeout)

    async def promote_all(self) -> int:
        total = 0
        while not self.stop.is_set():
            started = datetime.now(UTC)
            # One statement, committed on its own: no BEGIN and COMMIT round trips before the publish.
            async with acquire(self.runtime.pool) as connection:
                rows = await job_queries.promote_due(connection, BATCH_SIZE)
            if not rows:
                break
            total += len(rows)
            job_metrics.SCHEDULER_PROMOTED.inc(len(rows))
            # Published only after the promotion committed: a worker must find the row `enqueued`. In a task of
            # its own, so the next due job is not kept waiting for this one's confirm and published_at mark.
            task = asyncio.create_task(self._publish(rows, started))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
            while len(self._publishing) >= MAX_PUBLISHING:  # a backlog is promoted no faster than it is published
                await asyncio.wait(self._publishing, return_when=asyncio.FIRST_COMPLETED)
            if len(rows) < BATCH_SIZE:
                break
        return total

    async def _publish(self, rows: list[asyncpg.Record], started: datetime) -> None:
        try:
            published = await self.runtime.client.publish(list(rows))
        except Exception:  # the rows are committed `enqueued`: the outbox relay publishes them
            log.exception("publishing promoted jobs failed; the outbox relay will")
            return
        log.info("promoted due jobs", extra={
            "count": len(rows), "published": published,
            **_milliseconds([(started - row["run_at"]).total_seconds() for row in rows]),
        })
        if published < len(rows):
            log.warning("broker unavailable; the outbox relay will publish the rest",
                        extra={"unpublished": len(rows) - published})

    async def time_to_next_due(self) -> float:
        until_due = await job_queries.seconds_to_next_due(self.runtime.pool)
        if until_due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(until_due + TIMER_MARGIN_SECONDS, MIN_WAIT_SECONDS))


class OutboxRelay:
    """Nothing stuck: publishes what should be on a queue and is not.

    - committed `enqueued` jobs whose publish never confirmed (crash, broker outage);
    - `enqueued` jobs whose message was not consumed for REPUBLISH_ENQUEUED_SECONDS (a purged or lost queue);
    - `processing` jobs whose lease expired (their worker died, froze or lost Postgres): a copy for the
      current attempt lets another worker take them over, or they fail when it was their last attempt;
    - `retrying` jobs whose delayed message is long overdue (dead-lettering out of a classic delay queue is
      at-most-once).
    A copy of a message that is still on its way is harmless: the claim runs a job once per attempt.
    """

    def __init__(self, runtime: Runtime, stop: asyncio.Event) -> None:
        self.runtime = runtime
        self.stop = stop
        self.grace_seconds = runtime.settings.outbox_grace_seconds
        self.republish_seconds = runtime.settings.republish_enqueued_seconds
        # A lease-expired job whose republished copy was not taken within a lease is published once more.
        self.lease_seconds = runtime.settings.job_lease_seconds
        self.every_seconds = max(min(runtime.settings.scheduler_poll_seconds, 1.0), 0.2)

    async def run(self) -> None:
        while not self.stop.is_set():
            pause = self.every_seconds
            try:
                await self.relay_all()
            except TRANSIENT_ERRORS as exc:
                log.warning("outbox relay round failed; retrying", extra={"error": repr(exc)})
            except Exception:
                log.exception("outbox relay round failed unexpectedly; retrying")
                pause = UNEXPECTED_ERROR_PAUSE_SECONDS
            await wait_any([self.stop], pause)

    async def relay_all(self) -> int:
        total = 0
        unroutable: list[uuid.UUID] = []
        while not self.stop.is_set():
            async with acquire(self.runtime.pool) as connection, connection.transaction():
                rows = await job_queries.unpublished(connection, self.grace_seconds, BATCH_SIZE, unroutable)
                published, broker_down = await self._publish_locked(rows, unroutable)
                # Marked on the connection holding the row locks: another relay skips these rows until
                # this transaction commits and then no longer sees them, so it never publishes them again.
                # (JobClient.publish marks through the pool, which would wait on our own locks.)
                if published:
                    await job_queries.mark_published(connection, published)
            if rows:
                log.info("outbox relay published jobs", extra={"count": len(published), "found": len(rows)})
            total += len(published)
            if broker_down:
                log.warning("broker unavailable; the relay tries again",
                            extra={"unpublished": len(rows) - len(published)})
                return total
            if len(rows) < BATCH_SIZE:
                break
        return (total + await self.republish_stale_enqueued() + await self.recover_expired_leases()
                + await self.republish_overdue_retries())

    async def republish_stale_enqueued(self) -> int:
        async with acquire(self.runtime.pool) as connection, connection.transaction():
            rows = await job_queries.stale_enqueued(connection, self.republish_seconds, BATCH_SIZE)
            published, _ = await self._publish_locked(rows)
            if published:
                await job_queries.mark_republished(connection, published)
        if published:
            log.warning("republished enqueued jobs whose message was not consumed",
                        extra={"count": len(published), "after_seconds": self.republish_seconds})
        return len(published)

    async def recover_expired_leases(self) -> int:
        async with acquire(self.runtime.pool) as connection, connection.transaction():
            rows = await job_queries.expired_leases(connection, self.lease_seconds, BATCH_SIZE)
            exhausted = [row["id"] for row in rows if row["attempt"] >= row["max_attempts"]]
            failed = await job_queries.fail_lease_expired(connection, exhausted) if exhausted else []
            published, _ = await self._publish_locked([row for row in rows if row["id"] not in set(exhausted)])
            if published:
                await job_queries.mark_republished(connection, published)
        for row in rows:
            if row["id"] in published:
                log.warning("lease expired; job published for another worker to take over",
                            extra={"job_id": str(row["id"]), "worker": row["worker"], "attempt": row["attempt"]})
        for row in failed:
            try:
                await self.runtime.broker.publish_dead(
                    Envelope.from_row(row).encode(),
                    "attempts exhausted: its lease expired during the last attempt",
                    {"job_id": str(row["id"]), "kind": row["kind"], "service": row["service"]},
                )
            except BrokerUnavailable:
                log.warning("could not copy a failed job to the parking lot", extra={"job_id": str(row["id"])})
        return len(published) + len(failed)

    async def republish_overdue_retries(self) -> int:
        """Retries whose delayed message never came back go straight to their work queue; a copy that does
        arrive later is skipped by the claim, and none can run before the job's retry_at."""
        async with acquire(self.runtime.pool) as connection, connection.transaction():
            rows = await job_queries.overdue_retries(connection, OVERDUE_RETRY_SECONDS, BATCH_SIZE)
            published, _ = await self._publish_locked(rows)
            if published:
                await job_queries.mark_republished(connection, published)
        if published:
            log.warning("republished overdue retries", extra={"count": len(published)})
        return len(published)

    async def _publish_locked(
        self, rows: Sequence[asyncpg.Record], unroutable: list[uuid.UUID] | None = None
    ) -> tuple[list[uuid.UUID], bool]:
        """The ids published, and whether the broker went away before the end."""
        outcome = await self.runtime.broker.publish_rows(rows)
        for row, error in outcome.unroutable:
            # No queue takes this service's messages (no process declared it): the row stays for a
            # later round, and this round goes on past it to the rows behind.
            log.error("job unroutable; left unpublished",
                      extra={"job_id": str(row["id"]), "service": row["service"], "error": repr(error)})
            if unroutable is not None:
                unroutable.append(row["id"])
        return outcome.confirmed, bool(outcome.unavailable)
