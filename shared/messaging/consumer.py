"""The worker runtime's hot path: claim the job row, run the handler, record the outcome, settle the message.

Acks and nacks happen in one place (`_on_message`); handlers never touch the message.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel

from shared.batching import Batcher
from shared.client import JobClient, policy_for
from shared.db import jobs as job_queries
from shared.jobs import JobState
from shared.logs import current_job_id
from shared.messaging.broker import Broker, BrokerUnavailable
from shared.messaging.envelope import Envelope, PoisonMessage, decode
from shared.messaging.topology import work_queue
from shared.registry import InvalidJobArguments, JobKind, PermanentError, Registry
from shared.retry import GiveUp, Retry, RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobContext:
    """What a handler gets besides its arguments."""

    job_id: uuid.UUID
    kind: str
    attempt: int
    max_attempts: int
    parent_id: uuid.UUID | None
    pool: asyncpg.Pool
    client: JobClient
    log: logging.Logger


Handler = Callable[[JobContext, Any], Awaitable[Any]]


class Outcome(enum.Enum):
    ACK = "ack"  # the job's state is committed (or there was nothing to do)
    REQUEUE = "requeue"  # give the message back; another delivery will finish the work


@dataclass(frozen=True)
class Failure:
    error: str
    traceback: str | None
    permanent: bool
    reason: str


def describe_failure(exc: BaseException, *, timed_out: bool, timeout: float) -> Failure:
    if timed_out:
        return Failure(f"timed out after {timeout:g}s", None, False, "timeout")
    permanent = isinstance(exc, (PermanentError, InvalidJobArguments))
    text = f"{type(exc).__name__}: {exc}"
    return Failure(text, "".join(traceback.format_exception(exc)), permanent,
                   "permanent error" if permanent else "error")


class Consumer:
    def __init__(
        self,
        *,
        service: str,
        worker_id: str,
        broker: Broker,
        pool: asyncpg.Pool,
        client: JobClient,
        registry: Registry,
        handlers: Mapping[str, Handler],
        default_retry: RetryPolicy,
        prefetch: int,
        concurrency: int,
        dead_after_seconds: float,
    ) -> None:
        self.service = service
        self.worker_id = worker_id
        self.broker = broker
        self.pool = pool
        self.client = client
        self.registry = registry
        self.handlers = dict(handlers)
        self.default_retry = default_retry
        self.prefetch = prefetch
        self.dead_after_seconds = dead_after_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._inflight: dict[asyncio.Task[Any], uuid.UUID | None] = {}
        self._stopping = False
        self._running: dict[uuid.UUID, asyncio.Task[Any]] = {}
        # Deliveries arriving together share one claim, and jobs finishing together one
        # `succeeded` write: one round trip and one commit each instead of one per job.
        self._claims: Batcher[tuple[uuid.UUID, bool], asyncpg.Record | None] = Batcher(self._flush_claims)
        self._succeeded: Batcher[tuple[uuid.UUID, Any], bool] = Batcher(self._flush_succeeded)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def start(self) -> None:
        self._channel = await self.broker.open_channel(self.prefetch)
        self._queue = await self._channel.get_queue(work_queue(self.service), ensure=True)
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info("consuming", extra={"queue": work_queue(self.service), "prefetch": self.prefetch})

    async def stop(self, timeout: float) -> None:
        """Stop taking work, let in-flight jobs finish up to `timeout`, then requeue the rest."""
        self._stopping = True
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception:  # a closed channel has no consumer left to cancel
                log.warning("could not cancel the consumer", exc_info=True)
            self._consumer_tag = None
        tasks = list(self._inflight)
        if tasks:
            log.info("waiting for in-flight jobs", extra={"count": len(tasks), "timeout": timeout})
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aiormq cancels its delivery callbacks when their channel closes, as on a dropped
        # connection. The job runs in a task of our own so a network blip does not interrupt a
        # handler that can still commit its outcome; the redelivered copy then finds it finished.
        work = asyncio.create_task(self._handle(message))
        self._inflight[work] = None
        await asyncio.shield(work)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            async with self._slots:
                # A prefetched delivery that waited for a slot past SIGTERM goes back untouched.
                outcome = Outcome.REQUEUE if self._stopping else await self._process(message, task)
        except asyncio.CancelledError:
            # Shutdown ran out of patience: hand the job back, never to the parking lot.
            job_id = self._inflight.get(task)
            if job_id is not None:
                await job_queries.release(self.pool, [job_id], self.worker_id, "worker shutdown")
            await self._settle(message, Outcome.REQUEUE)
            raise
        except Exception:
            log.exception("unexpected error while processing a message; requeued")
            outcome = Outcome.REQUEUE
            await asyncio.sleep(1)  # a database outage should not turn into a hot redelivery loop
        finally:
            job_id = self._inflight.pop(task, None)
            if job_id is not None and self._running.get(job_id) is task:
                del self._running[job_id]
        await self._settle(message, outcome)

    async def _settle(self, message: AbstractIncomingMessage, outcome: Outcome) -> None:
        try:
            if outcome is Outcome.ACK:
                await message.ack()
            else:
                await message.nack(requeue=True)
        except Exception:  # the channel died; RabbitMQ redelivers unsettled messages on its own
            log.warning("could not settle message", extra={"outcome": outcome.value}, exc_info=True)

    async def _process(self, message: AbstractIncomingMessage, task: asyncio.Task[Any]) -> Outcome:
        try:
            envelope = decode(message.body)
            if envelope.kind not in self.handlers:
                raise PoisonMessage(f"unknown job kind {envelope.kind!r} for service {self.service!r}")
        except PoisonMessage as poison:
            return Outcome.ACK if await self._park(message.body, str(poison), {}) else Outcome.REQUEUE

        earlier = self._running.get(envelope.job_id)
        if earlier is not None:
            # A redelivery of a job still running here (its channel closed under it): let that
            # run finish first, so the job is not executed twice at once; the claim then sees
            # its outcome.
            await asyncio.wait({earlier})
        row = await self._claims.submit((envelope.job_id, bool(message.redelivered)))
        if row is None:
            state = await job_queries.job_state(self.pool, envelope.job_id)
            if state is None:
                parked = await self._park(message.body, f"job {envelope.job_id} does not exist", {})
                return Outcome.ACK if parked else Outcome.REQUEUE
            log.info("skipped delivery", extra={"job_id": str(envelope.job_id), "state": state})
            return Outcome.ACK
        self._inflight[task] = row["id"]
        self._running[row["id"]] = task
        return await self._run(row, message.body)

    async def _run(self, row: asyncpg.Record, body: bytes) -> Outcome:
        kind = self.registry.get(row["kind"])
        context = JobContext(
            job_id=row["id"], kind=row["kind"], attempt=row["attempt"], max_attempts=row["max_attempts"],
            parent_id=row["parent_id"], pool=self.pool, client=self.client,
            log=logging.getLogger(f"job.{row['kind']}"),
        )
        token = current_job_id.set(row["id"])
        deadline = asyncio.timeout(kind.timeout_seconds)
        try:
            args: BaseModel = kind.parse(row["args"])
            async with deadline:
                result = await self.handlers[row["kind"]](context, args)
        except Exception as exc:
            failure = describe_failure(exc, timed_out=deadline.expired(), timeout=kind.timeout_seconds)
            context.log.warning("attempt %d failed: %s", row["attempt"], failure.error)
            return await self._fail(row, kind, failure, body)
        finally:
            current_job_id.reset(token)
        await self._succeeded.submit((row["id"], _jsonable(result)))
        return Outcome.ACK

    async def _flush_claims(self, deliveries: list[tuple[uuid.UUID, bool]]) -> list[asyncpg.Record | None]:
        claimed = await job_queries.claim_many(
            self.pool, self.worker_id, deliveries, dead_after_seconds=self.dead_after_seconds
        )
        # pop: a job delivered twice in one batch goes to the first delivery; the other is skipped.
        return [claimed.pop(job_id, None) for job_id, _ in deliveries]

    async def _flush_succeeded(self, outcomes: list[tuple[uuid.UUID, Any]]) -> list[bool]:
        marked = await job_queries.mark_succeeded_many(self.pool, self.worker_id, outcomes)
        return [job_id in marked for job_id, _ in outcomes]

    async def _fail(self, row: asyncpg.Record, kind: JobKind, failure: Failure, body: bytes) -> Outcome:
        policy = policy_for(kind, self.default_retry)
        decision = policy.decide(row["attempt"], permanent=failure.permanent, max_attempts=row["max_attempts"])
        if isinstance(decision, Retry):
            reason = f"{failure.reason}; retry in {decision.delay_seconds}s"
            if not await job_queries.mark_attempt_failed(
                self.pool, row["id"], self.worker_id, state=JobState.RETRYING, reason=reason,
                error=failure.error, traceback=failure.traceback, retry_in_seconds=decision.delay_seconds,
            ):
                return Outcome.ACK  # taken over or deleted meanwhile: not ours to retry
            try:
                await self.broker.publish_retry(
                    row["service"], Envelope(row["id"], row["kind"], row["attempt"]), row["priority"],
                    decision.delay_seconds,
                )
            except BrokerUnavailable:
                # The row says `retrying`; a requeued message makes the retry early, never lost.
                return Outcome.REQUEUE
            return Outcome.ACK
        assert isinstance(decision, GiveUp)
        reason = f"{failure.reason}: {decision.reason}" if failure.permanent is False else failure.reason
        if await job_queries.mark_attempt_failed(
            self.pool, row["id"], self.worker_id, state=JobState.FAILED, reason=reason,
            error=failure.error, traceback=failure.traceback,
        ):
            await self._park(body, f"{reason}: {failure.error}", {"job_id": str(row["id"]), "kind": row["kind"]})
        return Outcome.ACK

    async def _park(self, body: bytes, reason: str, headers: dict[str, Any]) -> bool:
        log.warning("parked message", extra={"reason": reason, **headers})
        try:
            await self.broker.publish_dead(body, reason, {**headers, "service": self.service})
        except BrokerUnavailable:
            log.error("could not copy a message to the parking lot", extra={"reason": reason})
            return False
        return True


def _jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if result is None or isinstance(result, (str, int, float, bool, list, dict)):
        return result
    return str(result)
