"""Recurring jobs from the recurring_jobs table, fired once per occurrence however many replicas run.

Each occurrence is enqueued under the unique (recurring_id, fire_time): a replica that comes second
gets None from enqueue and moves on. The misfire policy is applied when a definition is (re)loaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.scheduler.due_jobs import TRANSIENT_ERRORS, UNEXPECTED_ERROR_PAUSE_SECONDS
from services.scheduler.wakeup import wait_any
from shared import job_metrics
from shared.cron import InvalidSchedule, MisfirePolicy, Schedule, catch_up, parse_cron
from shared.db import recurring as recurring_queries
from shared.db.pool import acquire
from shared.registry import InvalidJobArguments, UnknownJobKind
from shared.runtime import Runtime

log = logging.getLogger(__name__)

# Definitions are re-read this often even without a notification (one may have been lost).
REFRESH_SECONDS = 60.0
ERROR_BACKOFF_SECONDS = 2.0
# An occurrence this late was missed by a stalled process, not merely fired a little late.
STALL_SECONDS = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Entry:
    """One enabled definition as scheduled in this process."""

    id: str
    kind: str
    args: dict[str, Any]
    signature: tuple[Any, ...]
    schedule: Schedule
    upcoming: datetime | None  # the next regular occurrence
    policy: MisfirePolicy
    grace_seconds: float
    pending: deque[datetime] = field(default_factory=deque)  # catch-up runs decided by the misfire policy
    queue: str | None = None  # the definition's queue class; None: its kind's

    def next_fire(self) -> datetime | None:
        return self.pending[0] if self.pending else self.upcoming

    def fired(self, fire_time: datetime) -> None:
        if self.pending and self.pending[0] == fire_time:
            self.pending.popleft()
        else:
            self.upcoming = self.schedule.next_after(fire_time)


def signature_of(row: asyncpg.Record) -> tuple[Any, ...]:
    return (row["kind"], json.dumps(row["args"], sort_keys=True), row["cron"], row["timezone"],
            row["misfire_policy"], row["misfire_grace_seconds"], row["enabled"], row["queue"])


class RecurringScheduler:
    # AsyncIOScheduler's executor does not hand a job its scheduled fire time, which the unique
    # (recurring_id, fire_time) key needs, so the CronTriggers are driven from this loop instead.

    def __init__(self, runtime: Runtime, changed: asyncio.Event, stop: asyncio.Event,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.runtime = runtime
        self.changed = changed
        self.stop = stop
        self.clock = clock
        self.entries: dict[str, Entry] = {}
        self.rejected: dict[str, tuple[Any, ...]] = {}  # definitions already reported as unusable

    async def run(self) -> None:
        reload_all = True  # at start, and after an outage, every definition gets the misfire policy
        next_refresh = 0.0
        while not self.stop.is_set():
            try:
                if reload_all or self.changed.is_set() or time.monotonic() >= next_refresh:
                    self.changed.clear()
                    await self.reload(reload_all=reload_all)
                    reload_all = False
                    next_refresh = time.monotonic() + REFRESH_SECONDS
                await self.fire_due()
                timeout = min(self.seconds_to_next_fire(), next_refresh - time.monotonic())
            except TRANSIENT_ERRORS as exc:
                log.warning("recurring jobs: database or broker unavailable; reloading when back",
                            extra={"error": repr(exc)})
                reload_all = True
                timeout = ERROR_BACKOFF_SECONDS
            except Exception:
                log.exception("recurring jobs: unexpected error; reloading the definitions")
                reload_all = True
                timeout = UNEXPECTED_ERROR_PAUSE_SECONDS
            await wait_any([self.changed, self.stop], timeout)

    async def reload(self, *, reload_all: bool) -> None:
        rows = await recurring_queries.list_definitions(self.runtime.pool)
        now = self.clock()
        entries: dict[str, Entry] = {}
        for row in rows:
            signature = signature_of(row)
            current = self.entries.get(row["id"])
            if current is not None and current.signature == signature and not reload_all:
                entries[row["id"]] = current  # unchanged: keep its place in the schedule
                continue
            if not row["enabled"]:
                if current is not None:
                    log.info("recurring job paused", extra={"recurring_id": row["id"]})
                continue
            entry = self._load(row, signature, now)
            if entry is not None:
                entries[row["id"]] = entry
        for removed in self.entries.keys() - {row["id"] for row in rows}:
            log.info("recurring job removed", extra={"recurring_id": removed})
        self.entries = entries

    def _load(self, row: asyncpg.Record, signature: tuple[Any, ...], now: datetime) -> Entry | None:
        timezone = row["timezone"] or self.runtime.settings.scheduler_timezone
        try:
            schedule = parse_cron(row["cron"], timezone)
            _, args = self.runtime.registry.validate(row["kind"], row["args"])
        except (InvalidSchedule, UnknownJobKind, InvalidJobArguments) as exc:
            if self.rejected.get(row["id"]) != signature:
                log.error("recurring job cannot be scheduled", extra={"recurring_id": row["id"], "error": str(exc)})
                self.rejected[row["id"]] = signature
            return None
        self.rejected.pop(row["id"], None)
        policy = MisfirePolicy(row["misfire_policy"])
        plan = catch_up(schedule, policy, last_fire_time=row["last_fire_time"], now=now,
                        grace_seconds=row["misfire_grace_seconds"])
        if plan.missed:
            job_metrics.SCHEDULER_MISFIRES.labels(row["id"], policy.value).inc(plan.missed)
        entry = Entry(row["id"], row["kind"], args, signature, schedule, upcoming=schedule.next_after(now),
                      policy=policy, grace_seconds=row["misfire_grace_seconds"], pending=deque(plan.runs),
                      queue=row["queue"])
        log.info("recurring job scheduled", extra={
            "recurring_id": entry.id, "cron": row["cron"], "timezone": timezone, "misfire_policy": policy.value,
            "last_fire_time": row["last_fire_time"], "missed": plan.missed, "catch_up_runs": len(plan.runs),
            "next_fire_time": entry.next_fire(),
        })
        return entry

    async def fire_due(self) -> None:
        for entry in list(self.entries.values()):
            while not self.stop.is_set():
                # Before every occurrence: the process may have stalled in the middle of this loop too.
                self.replan_if_stalled(entry)
                fire_time = entry.next_fire()
                if fire_time is None or fire_time > self.clock():
                    break
                if not await self.fire(entry, fire_time):
                    self.entries.pop(entry.id, None)
                    break
                entry.fired(fire_time)

    def replan_if_stalled(self, entry: Entry) -> None:
        """This loop wakes at each occurrence; one overdue by more than STALL_SECONDS means the process itself
        stalled (SIGSTOP, a paused VM, a starved event loop). What it missed meanwhile follows the misfire
        policy, as after a restart, instead of firing every occurrence in a burst."""
        now = self.clock()
        if entry.pending or entry.upcoming is None or (now - entry.upcoming).total_seconds() <= STALL_SECONDS:
            return
        # The first missed occurrence is `upcoming`: catch_up counts from just before it.
        plan = catch_up(entry.schedule, entry.policy, last_fire_time=entry.upcoming - timedelta(microseconds=1),
                        now=now, grace_seconds=entry.grace_seconds)
        entry.pending = deque(plan.runs)
        entry.upcoming = entry.schedule.next_after(now)
        job_metrics.SCHEDULER_MISFIRES.labels(entry.id, entry.policy.value).inc(plan.missed)
        log.warning("recurring jobs: the scheduler stalled; missed occurrences follow the misfire policy", extra={
            "recurring_id": entry.id, "misfire_policy": entry.policy.value, "missed": plan.missed,
            "catch_up_runs": len(plan.runs), "next_fire_time": entry.next_fire(),
        })

    async def fire(self, entry: Entry, fire_time: datetime) -> bool:
        """Enqueue one occurrence; False when the definition can no longer be enqueued at all."""
        client = self.runtime.client
        try:
            async with acquire(self.runtime.pool) as connection, client.transaction(connection):
                job = await client.enqueue(entry.kind, entry.args, recurring_id=entry.id, fire_time=fire_time,
                                           connection=connection, queue=entry.queue)
                if job is not None:
                    await recurring_queries.record_fire(connection, entry.id, fire_time, job.id)
        except (UnknownJobKind, InvalidJobArguments) as exc:
            log.error("recurring job cannot be enqueued", extra={"recurring_id": entry.id, "error": str(exc)})
            return False
        if job is None:
            log.debug("occurrence already fired by another scheduler",
                      extra={"recurring_id": entry.id, "fire_time": fire_time})
        else:
            job_metrics.SCHEDULER_FIRES.labels(entry.id).inc()
            log.info("recurring job fired", extra={
                "recurring_id": entry.id, "fire_time": fire_time, "job_id": str(job.id),
                "lateness_ms": round((self.clock() - fire_time).total_seconds() * 1000, 1),
            })
        return True

    def seconds_to_next_fire(self) -> float:
        upcoming = [fire for entry in self.entries.values() if (fire := entry.next_fire()) is not None]
        if not upcoming:
            return REFRESH_SECONDS
        return max((min(upcoming) - self.clock()).total_seconds(), 0.0)
