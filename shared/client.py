"""The one write path for jobs: validate, write the row (in the caller's transaction), publish after commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.batching import Batcher
from shared.db import bulk_jobs
from shared.db import jobs as job_queries
from shared.db.pool import acquire
from shared.jobs import JobState, QueueClass
from shared.messaging.broker import Broker
from shared.published_marks import PublishedMarks
from shared.registry import InvalidJobArguments, JobKind, Registry, UnknownJobKind
from shared.retry import RetryPolicy

log = logging.getLogger(__name__)

# Publishes in flight at once, each awaiting its own confirm: one round trip per window instead of per
# message. A window that meets a broker outage ends the publishing; what it did not confirm stays for the
# outbox relay, as a single unconfirmed publish does.
PUBLISH_WINDOW = 256


class IdempotencyConflict(ValueError):
    """The idempotency key belongs to a job with other arguments."""

    def __init__(self, key: str, existing_id: uuid.UUID) -> None:
        super().__init__(f"idempotency key {key!r} is already used by job {existing_id} with other arguments")
        self.key = key
        self.existing_id = existing_id


class BatchRefused(ValueError):
    """Some items of an `enqueue_many` batch cannot be enqueued; nothing of the batch was written.

    `errors` pairs each refused item's index with its reason: UnknownJobKind, InvalidJobArguments,
    IdempotencyConflict or ValueError, as `enqueue` would raise for it alone.
    """

    def __init__(self, errors: list[tuple[int, Exception]]) -> None:
        super().__init__("; ".join(f"item {index}: {error}" for index, error in errors))
        self.errors = errors


@dataclass(frozen=True)
class JobSpec:
    """One job of `enqueue_many`, of a batch, or a batch's callback; the fields mean what `enqueue`'s arguments do."""

    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)
    queue: str | QueueClass | None = None
    run_at: datetime | None = None
    delay: float | timedelta | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    parent_id: uuid.UUID | None = None


@dataclass(frozen=True)
class EnqueuedJob:
    id: uuid.UUID
    kind: str
    state: JobState
    created: bool  # False when an idempotency key returned an existing job


def policy_for(kind: JobKind, default: RetryPolicy) -> RetryPolicy:
    """The kind's own policy (its jitter, when it declares none, the default's) or the default."""
    return kind.retry.with_jitter(default.jitter or 0.0) if kind.retry else default


CONTINUE_ON = ("succeeded", "finished")


class UnknownParentJob(LookupError):
    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(f"no job {job_id} to continue")
        self.job_id = job_id


@dataclass(frozen=True)
class Batch:
    id: uuid.UUID
    job_ids: list[uuid.UUID]
    callback_id: uuid.UUID | None


class JobClient:
    def __init__(self, pool: asyncpg.Pool, broker: Broker, registry: Registry, default_retry: RetryPolicy) -> None:
        self.pool = pool
        self.broker = broker
        self.registry = registry
        self.default_retry = default_retry
        # Jobs written inside a caller's open transaction, published once `transaction()` commits.
        self._after_commit: dict[int, list[asyncpg.Record]] = {}
        # Confirmed publishes are stamped a moment later, together, off the caller's path.
        self._published_marks = PublishedMarks(pool)
        # Enqueues on their own connection that arrive together share one INSERT and one commit (group
        # commit done by the client, as the worker's claims are). Each caller still gets its own row or
        # its own error, and a job is published only after the commit that wrote it.
        self._grouped_inserts: Batcher[job_queries.NewJob, asyncpg.Record | Exception | None] = Batcher(
            self._flush_inserts)

    async def enqueue(
        self,
        kind: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str | QueueClass | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        connection: asyncpg.Connection | None = None,
        parent_id: uuid.UUID | None = None,
        recurring_id: str | None = None,
        fire_time: datetime | None = None,
        after: uuid.UUID | None = None,
        on: str = "succeeded",
        batch_id: uuid.UUID | None = None,
    ) -> EnqueuedJob | None:
        """Write the job and publish it after commit.

        With `after`, a continuation: it waits (`awaiting`) until that job has "succeeded" (skipped when it
        ends otherwise) or "finished" in any final state, as `on` says; run_at / delay then count from there.
        Returns None only for a recurring occurrence (recurring_id, fire_time) that exists already.
        Raises UnknownJobKind / InvalidJobArguments / IdempotencyConflict / UnknownParentJob / ValueError
        before writing.
        """
        job_kind, clean_args = self.registry.validate(kind, args or {})
        if on not in CONTINUE_ON:
            raise ValueError(f"on must be one of {', '.join(CONTINUE_ON)}")
        new_job = self._new_job(
            job_kind, clean_args, queue=queue, run_at=run_at, delay=delay, max_attempts=max_attempts,
            idempotency_key=idempotency_key, parent_id=parent_id, recurring_id=recurring_id,
            fire_time=fire_time,
        )
        if after is not None:
            new_job = replace(new_job, after_id=after, after_on=on)
        if batch_id is not None:  # joins an open batch (open_batch); sealed by its producer
            new_job = replace(new_job, batch_id=batch_id)
        if connection is None and recurring_id is None and after is None and batch_id is None:
            # A plain job: concurrent callers share one INSERT and one commit.
            outcome = await self._grouped_inserts.submit(new_job)
            if isinstance(outcome, Exception):
                raise outcome
            row = outcome
        elif connection is None:
            async with acquire(self.pool) as own:
                if after is None:
                    row = await self._insert(own, new_job)
                else:
                    async with own.transaction():  # the parent stays share-locked until the insert commits
                        row = await self._insert(own, await self._continuation(own, new_job))
        else:
            if after is not None:
                new_job = await self._continuation(connection, new_job)
            row = await self._insert(connection, new_job)
        return await self._written(row, new_job, connection)

    async def _continuation(self, connection: asyncpg.Connection, job: job_queries.NewJob) -> job_queries.NewJob:
        assert job.after_id is not None and job.after_on is not None
        try:
            state, reason = await job_queries.continuation_start(connection, job.after_id, job.after_on)
        except LookupError:
            raise UnknownParentJob(job.after_id) from None
        return replace(job, state=state, state_reason=reason)

    async def enqueue_batch(
        self, jobs: Sequence[JobSpec], then: JobSpec | None = None, *, connection: asyncpg.Connection | None = None,
    ) -> Batch:
        """Enqueue `jobs` as one batch, and `then` to run once when every one of them has finished (in any
        final state; the batch row counts succeeded and failed). All or nothing: validated before writing,
        written in one transaction, published after it commits."""
        children = [self._spec_job(spec) for spec in jobs]
        callback = self._spec_job(then) if then is not None else None
        batch_id = uuid.uuid4()
        children = [replace(child, batch_id=batch_id) for child in children]
        if callback is not None:
            # An empty batch has nothing to wait for: its callback is due at once.
            callback = replace(callback, after_batch_id=batch_id,
                               state=JobState.AWAITING if children else None,
                               state_reason=f"waiting for batch {batch_id}" if children else "empty batch")
        async with contextlib.AsyncExitStack() as stack:
            if connection is None:
                connection = await stack.enter_async_context(acquire(self.pool))
                await stack.enter_async_context(self.transaction(connection))
            await job_queries.create_batch(connection, batch_id, len(children))
            for child in children:
                await self._written(await self._insert(connection, child), child, connection)
            if callback is not None:
                await self._written(await self._insert(connection, callback), callback, connection)
                await job_queries.set_batch_callback(connection, batch_id, callback.id)
        return Batch(batch_id, [child.id for child in children], callback.id if callback is not None else None)

    async def open_batch(self, batch_id: uuid.UUID, then: JobSpec) -> bool:
        """A batch that jobs join one by one (`enqueue(..., batch_id=)`), over many transactions, until
        `seal_batch`; `then` runs once when it is sealed and every job in it has finished. Idempotent on
        `batch_id` (False: it existed), so a producer that is retried reuses its batch."""
        callback = replace(self._spec_job(then), after_batch_id=batch_id, state=JobState.AWAITING,
                           state_reason=f"waiting for batch {batch_id}")
        async with acquire(self.pool) as connection, self.transaction(connection):
            if not await job_queries.create_batch(connection, batch_id, None):
                return False
            await self._written(await self._insert(connection, callback), callback, connection)
            await job_queries.set_batch_callback(connection, batch_id, callback.id)
        return True

    async def seal_batch(self, batch_id: uuid.UUID) -> None:
        await job_queries.seal_batch(self.pool, batch_id)

    def _spec_job(self, spec: JobSpec) -> job_queries.NewJob:
        kind, args = self.registry.validate(spec.kind, spec.args)
        return self._new_job(kind, args, queue=spec.queue, run_at=spec.run_at, delay=spec.delay,
                             max_attempts=spec.max_attempts, idempotency_key=spec.idempotency_key,
                             parent_id=spec.parent_id, recurring_id=None, fire_time=None)

    async def _written(
        self, row: asyncpg.Record | None, new_job: job_queries.NewJob, connection: asyncpg.Connection | None
    ) -> EnqueuedJob | None:
        """The written row as an EnqueuedJob, published now or after the caller's transaction commits."""
        if row is None:
            return None
        created = row["id"] == new_job.id
        job = EnqueuedJob(row["id"], row["kind"], JobState(row["state"]), created)
        if created and job.state is JobState.ENQUEUED:
            if connection is not None and id(connection) in self._after_commit:
                self._after_commit[id(connection)].append(row)
            elif connection is None or not connection.is_in_transaction():
                await self.publish([row])
            # else: a plain transaction of the caller's; the outbox relay publishes the row once it commits.
        return job

    async def enqueue_many(
        self, jobs: Iterable[JobSpec | tuple[str, Mapping[str, Any]]], *, connection: asyncpg.Connection | None = None,
    ) -> list[EnqueuedJob]:
        """Write many jobs with one INSERT in one transaction, then publish them with confirms in windows.

        All or nothing: an invalid item, or an idempotency key used with other content, raises BatchRefused
        naming every such item and writes nothing. An item whose idempotency key exists with the same
        content answers the existing job (`created` False), as `enqueue` does; so does a repeat of a key
        within the batch. Results are in the order of `jobs`. With `connection` the rows are written in
        the caller's transaction and published as `enqueue` would publish them.
        """
        specs = [item if isinstance(item, JobSpec) else JobSpec(item[0], item[1]) for item in jobs]
        new_jobs: list[job_queries.NewJob] = []
        errors: list[tuple[int, Exception]] = []
        for index, spec in enumerate(specs):
            try:
                job_kind, clean_args = self.registry.validate(spec.kind, spec.args)
                new_jobs.append(self._new_job(
                    job_kind, clean_args, queue=spec.queue, run_at=spec.run_at, delay=spec.delay,
                    max_attempts=spec.max_attempts, idempotency_key=spec.idempotency_key,
                    parent_id=spec.parent_id, recurring_id=None, fire_time=None,
                ))
            except (UnknownJobKind, InvalidJobArguments, ValueError) as error:
                errors.append((index, error))
        if errors:
            raise BatchRefused(errors)
        if connection is None:
            async with acquire(self.pool) as own:
                rows = await self._insert_many(own, new_jobs)
        else:
            rows = await self._insert_many(connection, new_jobs)
        results = [EnqueuedJob(row["id"], row["kind"], JobState(row["state"]), row["id"] == job.id)
                   for job, row in zip(new_jobs, rows, strict=True)]
        fresh = [row for job, row in zip(new_jobs, rows, strict=True)
                 if row["id"] == job.id and row["state"] == JobState.ENQUEUED.value]
        if fresh:
            if connection is not None and id(connection) in self._after_commit:
                self._after_commit[id(connection)].extend(fresh)
            elif connection is None or not connection.is_in_transaction():
                await self.publish(fresh)
            # else: a plain transaction of the caller's; the outbox relay publishes the rows once it commits.
        return results

    async def _insert_many(
        self, connection: asyncpg.Connection, jobs: list[job_queries.NewJob]
    ) -> list[asyncpg.Record]:
        """The row of each job, written or found by its idempotency key; one transaction (a savepoint in the
        caller's), rolled back whole on a conflict."""
        async with connection.transaction():
            written = await bulk_jobs.insert_jobs(connection, jobs)
            missing = [job.idempotency_key for job in jobs if job.id not in written and job.idempotency_key]
            existing = await bulk_jobs.find_by_idempotency_keys(connection, missing) if missing else {}
            rows: list[asyncpg.Record] = []
            conflicts: list[tuple[int, Exception]] = []
            for index, job in enumerate(jobs):
                row = written.get(job.id)
                if row is None:
                    assert job.idempotency_key is not None  # only a key can make an insert of a new id skip
                    row = existing[job.idempotency_key]
                    if row["kind"] != job.kind or row["args"] != job.args:
                        conflicts.append((index, IdempotencyConflict(job.idempotency_key, row["id"])))
                rows.append(row)
            if conflicts:
                raise BatchRefused(conflicts)
        return rows

    def _new_job(
        self, kind: JobKind, args: dict[str, Any], *, queue: str | QueueClass | None, run_at: datetime | None,
        delay: float | timedelta | None, max_attempts: int | None, idempotency_key: str | None,
        parent_id: uuid.UUID | None, recurring_id: str | None, fire_time: datetime | None,
    ) -> job_queries.NewJob:
        if run_at is not None and delay is not None:
            raise ValueError("give run_at or delay, not both")
        if run_at is not None and run_at.tzinfo is None:
            raise ValueError("run_at must carry a time zone offset")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        queue_class = QueueClass(queue) if queue is not None else kind.queue
        return job_queries.NewJob(
            id=uuid.uuid4(),
            kind=kind.name,
            args=args,
            queue=queue_class.value,
            service=kind.service,
            priority=queue_class.priority,
            state=None,  # scheduled or enqueued, decided by Postgres' clock
            max_attempts=max_attempts or policy_for(kind, self.default_retry).max_attempts,
            run_at=run_at,
            delay_seconds=delay,
            idempotency_key=idempotency_key,
            recurring_id=recurring_id,
            fire_time=fire_time,
            parent_id=parent_id,
        )

    async def _flush_inserts(self, jobs: list[job_queries.NewJob]) -> list[asyncpg.Record | Exception | None]:
        """Write the jobs of concurrent `enqueue` calls in one transaction; each one's row, None, or its error.

        An IdempotencyConflict is one caller's answer, not the group's. Should Postgres refuse the grouped
        statement itself (a value of one caller it cannot store), each job is written on its own, so one
        caller's bad value never fails the others'. A lost connection fails the group: nothing was committed,
        and every caller sees the error, as each would have alone.
        """
        try:
            async with acquire(self.pool) as connection, contextlib.AsyncExitStack() as stack:
                if any(job.idempotency_key for job in jobs):  # the insert and the look-up of the keys it skipped
                    await stack.enter_async_context(connection.transaction())
                # else one statement, committed on its own: no BEGIN and COMMIT round trips
                written = await bulk_jobs.insert_jobs(connection, jobs)
                keys = [job.idempotency_key for job in jobs if job.id not in written and job.idempotency_key]
                existing = await bulk_jobs.find_by_idempotency_keys(connection, keys) if keys else {}
        except asyncpg.PostgresError:
            if len(jobs) == 1:
                raise
            return list(await asyncio.gather(*(self._insert_alone(job) for job in jobs)))
        results: list[asyncpg.Record | Exception | None] = []
        for job in jobs:
            row = written.get(job.id)
            if row is None and job.idempotency_key is not None:
                row = existing.get(job.idempotency_key)
                if row is not None and (row["kind"] != job.kind or row["args"] != job.args):
                    results.append(IdempotencyConflict(job.idempotency_key, row["id"]))
                    continue
            results.append(row)
        return results

    async def _insert_alone(self, job: job_queries.NewJob) -> asyncpg.Record | Exception | None:
        try:
            async with acquire(self.pool) as connection:
                return await self._insert(connection, job)
        except (asyncpg.PostgresError, IdempotencyConflict) as error:
            return error

    async def _insert(self, connection: asyncpg.Connection, job: job_queries.NewJob) -> asyncpg.Record | None:
        row = await job_queries.insert_job(connection, job)
        if row is not None or job.idempotency_key is None:
            return row
        existing = await job_queries.find_by_idempotency_key(connection, job.idempotency_key)
        if existing is None:  # the conflict was on (recurring_id, fire_time)
            return None
        if existing["kind"] != job.kind or existing["args"] != job.args:
            raise IdempotencyConflict(job.idempotency_key, existing["id"])
        return existing

    @asynccontextmanager
    async def transaction(self, connection: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
        """A transaction whose enqueued jobs are published right after it commits.

        Jobs enqueued in a plain transaction are published too, by the scheduler's outbox relay,
        a few seconds later; this only makes it immediate.
        """
        key = id(connection)
        # Registered before the transaction opens: only jobs enqueued inside it are deferred to its commit.
        self._after_commit[key] = []
        try:
            async with connection.transaction():
                yield connection
        except BaseException:
            self._after_commit.pop(key, None)
            raise
        await self.publish(self._after_commit.pop(key, []))

    async def publish(self, rows: list[asyncpg.Record]) -> int:
        """Publish committed `enqueued` rows; the number confirmed. Unconfirmed ones stay for the relay.

        Up to PUBLISH_WINDOW publishes are in flight at once, each waiting for its own confirm; a confirmed
        one is stamped published a moment later (shared.published_marks).
        """
        outcome = await self.broker.publish_rows(rows, window=PUBLISH_WINDOW)
        for row, error in outcome.unavailable:
            log.warning("publish deferred to the outbox relay", extra={"job_id": str(row["id"]), "error": str(error)})
        for row, unroutable in outcome.unroutable:
            # The row is committed, so the caller's job exists: no queue takes its service's messages
            # yet (no worker of it ever started); the relay publishes it once one is declared.
            log.error("job unroutable; left to the outbox relay", extra={"job_id": str(row["id"]),
                                                                         "service": row["service"],
                                                                         "error": repr(unroutable)})
        self._published_marks.add(outcome.confirmed)
        return len(outcome.confirmed)

    async def close(self) -> None:
        """Stamp the publishes still waiting for it; before the pool closes."""
        await self._published_marks.close()
