"""The worker runtime's hot path: claim the job row under a lease, run the handler, record the outcome while
the lease is live, settle the message.

A claimed job is owned by its lease in Postgres, not by the unacked delivery: a redelivered copy (a dropped
connection, a killed worker) finds the lease live and is dropped, so no job runs on two workers at once. A
worker that dies leaves its lease to expire; the scheduler's lease sweeper then publishes the job again and
another worker takes it over. The message stays unacked while the job runs, so prefetch still bounds what a
worker holds and priorities keep their meaning; a job still running after SETTLE_RUNNING_AFTER_SECONDS has
its message acked early, long before RabbitMQ's consumer_timeout (30 min by default) would close the channel.
Acks and nacks happen in this module only; handlers never touch the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import traceback
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiormq.abc
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel

from shared import job_metrics
from shared.batching import Batcher
from shared.client import JobClient, policy_for
from shared.db import jobs as job_queries
from shared.db import limits as limit_queries
from shared.jobs import JobState
from shared.limits import KindLimits
from shared.logs import current_job_id
from shared.messaging.broker import Broker, BrokerUnavailable
from shared.messaging.envelope import Envelope, PoisonMessage, decode
from shared.messaging.topology import work_queue
from shared.progress import ProgressReporter
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
    # Set when this run must stop (an operator cancelled the job, or its lease is lost), just before the
    # handler's task is cancelled: cleanup code in `except CancelledError` / `finally` can tell the two apart
    # from a shutdown, and a handler shielding a step from cancellation can poll it.
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    reporter: ProgressReporter | None = None

    async def progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        """Report how far the job got (shown live on its page and in GET /api/jobs/{id}); cheap to call per
        item: stored at most every PROGRESS_INTERVAL_MS, the last report when the handler ends."""
        if self.reporter is not None:
            await self.reporter.report(done, total, message)


Handler = Callable[[JobContext, Any], Awaitable[Any]]


class Outcome(enum.Enum):
    ACK = "ack"  # the job is claimed, or there was nothing to do
    REQUEUE = "requeue"  # give the message back; another delivery will do the work


# Errors meaning Postgres or RabbitMQ is away or overloaded for now: the message goes back and nothing is
# counted against it. Postgres classes 08 (connection), 40 (deadlock, serialization), 53 (too many
# connections, out of resources) and 57 (shutting down, starting up).
TRANSIENT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.exceptions.TransactionRollbackError, asyncpg.exceptions.InsufficientResourcesError,
                    asyncpg.exceptions.OperatorInterventionError, BrokerUnavailable)
# A message whose handling fails this often for another reason (a bug, a row the code cannot read) is parked
# rather than requeued forever.
MAX_UNEXPECTED_FAILURES = 3
# How long a shutdown step waits on the broker (cancel the consumer, close the channel) before moving on.
BROKER_STEP_TIMEOUT_SECONDS = 5.0
# A job running this long has its message acked while it runs (its lease owns it anyway).
SETTLE_RUNNING_AFTER_SECONDS = 60.0
# How long an outcome write is retried while Postgres is away (still bounded by the job's lease).
OUTCOME_RETRY_PAUSE_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class _Claim:
    job_id: uuid.UUID
    attempt: int  # the delivery's


@dataclass(frozen=True, slots=True)
class _Success:
    job_id: uuid.UUID
    attempt: int
    result: Any


# A claim's row (None: not claimed), whether a success counted, or the error of its group's write.
_WriteResult = asyncpg.Record | bool | Exception | None


class JobTimeout(Exception):
    """The handler ran past its kind's timeout."""


@dataclass(eq=False)
class Lease:
    """A job this worker claimed: owned until `renewed_at` (monotonic, when the claim or last renewal that
    succeeded was sent) plus the lease length."""

    job_id: uuid.UUID
    attempt: int
    renewed_at: float
    task: asyncio.Task[Any] | None = None  # the handler's run, cancelled when the lease is lost
    lost: str | None = None
    settled: bool = False  # its message was acked before the job ended (a long job)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # the handler's JobContext.cancelled

    def running(self) -> bool:
        """The handler is still at work (not yet started counts: it is about to be)."""
        return self.task is None or not self.task.done()


@dataclass(frozen=True)
class Failure:
    error: str
    traceback: str | None
    permanent: bool
    reason: str


def describe_failure(exc: BaseException, *, timeout: float) -> Failure:
    if isinstance(exc, JobTimeout):
        return Failure(f"timed out after {timeout:g}s", None, False, "timeout")
    permanent = isinstance(exc, (PermanentError, InvalidJobArguments))
    text = f"{type(exc).__name__}: {exc}"
    return Failure(text, "".join(traceback.format_exception(exc)), permanent,
                   "permanent error" if permanent else "error")



@dataclass(eq=False)
class _ChannelAcks:
    low: int = 0  # every delivery tag up to this one is settled
    open: dict[int, asyncio.Future[None] | None] = field(default_factory=dict)  # None: its job still runs
    done: set[int] = field(default_factory=set)  # settled one by one, above `low`


class Acks:
    """The acks of one consumer's deliveries, sent together: the deliveries settled in the same moment (the
    jobs of one `succeeded` commit) go out as one `multiple=True` ack instead of one frame and write each.

    A multiple ack settles every lower unsettled delivery tag of its channel, so it reaches only as far as
    every tag from the last one settled is known here and either settled already or ready to ack: a job
    still running keeps its message unacked, a message being given back (nack) is never swept up with the
    acks, and a delivery not yet seen stops it too. Ready acks above such a tag go out one by one at once,
    so a long job never holds back the acks (and prefetch) of the jobs that finished after it.
    """

    def __init__(self) -> None:
        # Per channel: a reconnection brings a new one, whose tags start again from 1.
        self._channels: dict[aiormq.abc.AbstractChannel, _ChannelAcks] = {}
        self._flushing: asyncio.Task[None] | None = None

    def track(self, message: AbstractIncomingMessage) -> None:
        """A new delivery: outstanding until acked or nacked through this object."""
        if message.delivery_tag is not None:
            with contextlib.suppress(Exception):  # a closed channel: its deliveries are RabbitMQ's again
                self._channels.setdefault(message.channel, _ChannelAcks()).open[message.delivery_tag] = None

    async def ack(self, message: AbstractIncomingMessage) -> None:
        acks = self._of(message)
        if acks is None:
            await message.ack()
            return
        assert message.delivery_tag is not None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acks.open[message.delivery_tag] = future
        self._schedule()
        await future

    async def nack(self, message: AbstractIncomingMessage) -> None:
        # Its tag stays outstanding (stopping multiple acks) until the nack frame is queued: acks sent later
        # follow it on the same connection, so none can settle this message first.
        try:
            await message.nack(requeue=True)
        finally:
            acks = self._of(message)
            if acks is not None:
                assert message.delivery_tag is not None
                del acks.open[message.delivery_tag]
                acks.done.add(message.delivery_tag)
                self._schedule()

    def _of(self, message: AbstractIncomingMessage) -> _ChannelAcks | None:
        try:
            acks = self._channels.get(message.channel)
        except Exception:  # the channel is closed
            return None
        return acks if acks is not None and message.delivery_tag in acks.open else None

    def _schedule(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other deliveries settled in this moment join
        while any(future is not None for acks in self._channels.values() for future in acks.open.values()):
            for channel, acks in list(self._channels.items()):
                await self._flush_channel(channel, acks)
            await asyncio.sleep(0)

    async def _flush_channel(self, channel: aiormq.abc.AbstractChannel, acks: _ChannelAcks) -> None:
        if channel.is_closed:
            del self._channels[channel]
            for future in acks.open.values():
                if future is not None and not future.done():
                    future.set_exception(ConnectionError("the channel closed before the ack was sent"))
            return
        prefix: list[tuple[int, asyncio.Future[None]]] = []
        tag = acks.low + 1
        while True:
            if tag in acks.done:
                acks.done.discard(tag)
            elif (future := acks.open.get(tag)) is not None:
                prefix.append((tag, future))
                del acks.open[tag]
            else:
                break
            tag += 1
        acks.low = tag - 1
        singles = [(tag, future) for tag, future in acks.open.items() if future is not None]
        for tag, _ in singles:
            del acks.open[tag]
            acks.done.add(tag)
        if prefix:
            await self._send(channel, prefix[-1][0], True, [future for _, future in prefix])
        for tag, future in singles:
            await self._send(channel, tag, False, [future])

    @staticmethod
    async def _send(channel: aiormq.abc.AbstractChannel, tag: int, multiple: bool,
                    futures: list[asyncio.Future[None]]) -> None:
        try:
            await channel.basic_ack(tag, multiple=multiple)
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        else:
            for future in futures:
                if not future.done():
                    future.set_result(None)


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
        lease_seconds: float,
        renew_every_seconds: float,
        fence_after_seconds: float,
        limits: Mapping[str, KindLimits] | None = None,
        progress_interval_seconds: float = 0.5,
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
        self.lease_seconds = lease_seconds
        self.renew_every_seconds = renew_every_seconds
        # A lease not renewed for this long is given up here first: the run stops before anyone may take over.
        self.fence_after_seconds = fence_after_seconds
        self.progress_interval_seconds = progress_interval_seconds
        self.limits = dict(limits or {})  # kinds claimed one at a time under their limits (shared/db/limits.py)
        self._slots = asyncio.Semaphore(concurrency)
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._inflight: dict[asyncio.Task[Any], Lease | None] = {}
        self._leases: dict[uuid.UUID, Lease] = {}
        self._lease_keeper: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()  # early acks of long jobs, kept from the collector
        self._stopping = False
        self._dropped: Counter[str] = Counter()  # deliveries acked without running, by reason, not yet stored
        self._unexpected_failures: OrderedDict[str, int] = OrderedDict()
        # Deliveries arriving together share one claim, and jobs finishing together one `succeeded` write;
        # the claims and outcomes waiting at the same moment go in one statement: one round trip and one
        # commit for all of them instead of one per job.
        self._writes: Batcher[_Claim | _Success, _WriteResult] = Batcher(self._flush_writes)
        self._acks = Acks()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def start(self) -> None:
        self._lease_keeper = asyncio.create_task(self._keep_leases(), name=f"leases {self.worker_id}")
        self._channel = await self.broker.open_channel(self.prefetch)
        self._queue = await self._channel.get_queue(work_queue(self.service), ensure=True)
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info("consuming", extra={"queue": work_queue(self.service), "prefetch": self.prefetch,
                                     "lease_seconds": self.lease_seconds})

    async def stop(self, timeout: float) -> None:
        """Stop taking work, let in-flight jobs finish up to `timeout`, then give the rest back."""
        self._stopping = True
        if self._queue is not None and self._consumer_tag is not None:
            try:
                # Bounded: with the broker away, a robust channel would wait for the reconnection forever.
                async with asyncio.timeout(BROKER_STEP_TIMEOUT_SECONDS):
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
        if self._lease_keeper is not None:
            self._lease_keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_keeper
        await self._store_dropped()
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(BROKER_STEP_TIMEOUT_SECONDS):
                    await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aiormq cancels its delivery callbacks when their channel closes, as on a dropped
        # connection. The job runs in a task of our own so a network blip does not interrupt a
        # handler whose lease is still live.
        self._acks.track(message)
        work = asyncio.create_task(self._handle(message))
        self._inflight[work] = None
        await asyncio.shield(work)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        outcome: Outcome | None
        try:
            async with self._slots:
                # A prefetched delivery that waited for a slot past SIGTERM goes back untouched.
                outcome = Outcome.REQUEUE if self._stopping else await self._process(message, task)
        except asyncio.CancelledError:
            # Shutdown ran out of patience: hand the job back, never to the parking lot.
            lease = self._inflight.get(task)
            if lease is None:
                await self._settle(message, Outcome.REQUEUE)
            else:
                await self._release(lease)  # published afresh (or left to the relay): this copy is done
                if not lease.settled:
                    await self._settle(message, Outcome.ACK)
            raise
        except Exception as exc:
            outcome = await self._unexpected(message, exc)
        finally:
            lease = self._inflight.pop(task, None)
            if lease is not None and self._leases.get(lease.job_id) is lease:
                del self._leases[lease.job_id]
        if outcome is not None:
            await self._settle(message, outcome)

    async def _settle(self, message: AbstractIncomingMessage, outcome: Outcome) -> None:
        try:
            if outcome is Outcome.ACK:
                await self._acks.ack(message)
            else:
                await self._acks.nack(message)
        except Exception:  # the channel died; RabbitMQ redelivers unsettled messages on its own
            log.warning("could not settle message", extra={"outcome": outcome.value}, exc_info=True)

    async def _unexpected(self, message: AbstractIncomingMessage, exc: Exception) -> Outcome:
        if isinstance(exc, TRANSIENT_ERRORS):
            log.warning("database or broker unavailable while taking a message; requeued", exc_info=True)
            await asyncio.sleep(1)  # an outage should not turn into a hot redelivery loop
            return Outcome.REQUEUE
        key = message.message_id or str(hash(message.body))
        failures = self._unexpected_failures.pop(key, 0) + 1
        if failures >= MAX_UNEXPECTED_FAILURES:
            parked = await self._park(message.body, f"could not be handled {failures} times: {exc!r}"[:500], {})
            return Outcome.ACK if parked else Outcome.REQUEUE
        self._unexpected_failures[key] = failures
        while len(self._unexpected_failures) > 10_000:  # remember recent messages only
            self._unexpected_failures.popitem(last=False)
        log.exception("unexpected error while processing a message; requeued", extra={"failures": failures})
        await asyncio.sleep(1)
        return Outcome.REQUEUE

    async def _process(self, message: AbstractIncomingMessage, task: asyncio.Task[Any]) -> Outcome | None:
        """The outcome to settle the message with, or None when it was settled already (the job was claimed)."""
        try:
            envelope = decode(message.body)
            if envelope.kind not in self.handlers:
                raise PoisonMessage(f"unknown job kind {envelope.kind!r} for service {self.service!r}")
        except PoisonMessage as poison:
            return Outcome.ACK if await self._park(message.body, str(poison), {}) else Outcome.REQUEUE

        claim_sent = time.monotonic()
        limits = self.limits.get(envelope.kind)
        if limits is None:
            row = await self._claim(envelope.job_id, envelope.attempt)
        else:
            claimed = await limit_queries.claim_limited(
                self.pool, self.worker_id, envelope.job_id, envelope.attempt, envelope.kind, limits,
                lease_seconds=self.lease_seconds)
            if isinstance(claimed, limit_queries.HeldBack):
                # Off this worker and back to the scheduler: no slot held, no attempt counted.
                log.info("held back by its kind's limit", extra={
                    "job_id": str(envelope.job_id), "limit": claimed.limit, "until": claimed.until.isoformat()})
                return Outcome.ACK
            row = claimed
        if row is None:
            return await self._skip(message, envelope)
        lease = Lease(row["id"], row["attempt"], renewed_at=claim_sent)
        self._inflight[task] = lease
        self._leases[lease.job_id] = lease
        settle_early = asyncio.get_running_loop().call_later(
            SETTLE_RUNNING_AFTER_SECONDS, self._settle_early, message, lease)
        try:
            await self._run(row, lease, message.body)
        finally:
            settle_early.cancel()
        if limits is not None and limits.concurrency is not None:
            await self._wake_waiters(envelope.kind)
        return None if lease.settled else Outcome.ACK

    async def _wake_waiters(self, kind: str) -> None:
        """A run of a concurrency-limited kind ended here: the next waiter need not wait for its recheck."""
        try:
            await limit_queries.wake_waiters(self.pool, kind, 1)
        except (*TRANSIENT_ERRORS, asyncpg.PostgresError):
            log.warning("could not wake a job waiting for its kind's limit; its recheck will",
                        extra={"kind": kind}, exc_info=True)

    def _settle_early(self, message: AbstractIncomingMessage, lease: Lease) -> None:
        lease.settled = True
        task = asyncio.create_task(self._settle(message, Outcome.ACK))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _skip(self, message: AbstractIncomingMessage, envelope: Envelope) -> Outcome:
        verdict = await job_queries.delivery_verdict(self.pool, envelope.job_id)
        if verdict is None:
            parked = await self._park(message.body, f"job {envelope.job_id} does not exist", {})
            return Outcome.ACK if parked else Outcome.REQUEUE
        reason = skip_reason(verdict, envelope.attempt)
        self._dropped[reason] += 1
        log.info("skipped delivery", extra={"job_id": str(envelope.job_id), "state": verdict["state"],
                                            "reason": reason, "message_attempt": envelope.attempt})
        return Outcome.ACK

    async def _run(self, row: asyncpg.Record, lease: Lease, body: bytes) -> None:
        kind = self.registry.get(row["kind"])
        started = job_metrics.job_started(self.service, row["kind"], row["attempt"], row["run_at"])
        context = JobContext(
            job_id=row["id"], kind=row["kind"], attempt=row["attempt"], max_attempts=row["max_attempts"],
            parent_id=row["parent_id"], pool=self.pool, client=self.client,
            log=logging.getLogger(f"job.{row['kind']}"), cancelled=lease.stop,
            reporter=ProgressReporter(self.pool, row["id"], self.worker_id, row["attempt"],
                                      self.progress_interval_seconds),
        )
        token = current_job_id.set(row["id"])
        try:
            # Its own task, so that losing the lease can stop the handler without stopping this bookkeeping.
            lease.task = asyncio.create_task(self._call(kind, context, row["args"]))
        finally:
            current_job_id.reset(token)
        try:
            try:
                result = await lease.task
            finally:
                if context.reporter is not None and lease.lost is None:
                    await context.reporter.flush()  # the last report, before the outcome is written
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if lease.lost is None or (current is not None and current.cancelling()):
                raise
            job_metrics.job_outcome(self.service, row["kind"], "lost")
            log.warning("job stopped: its lease is lost; its outcome is not recorded",
                        extra={"job_id": str(lease.job_id), "attempt": lease.attempt, "reason": lease.lost})
            return
        except Exception as exc:
            job_metrics.handler_ended(self.service, row["kind"], started)
            failure = describe_failure(exc, timeout=kind.timeout_seconds)
            context.log.warning("attempt %d failed: %s", row["attempt"], failure.error)
            await self._fail(row, lease, kind, failure, body)
            return
        job_metrics.handler_ended(self.service, row["kind"], started)
        recorded = await self._write_outcome(lease, lambda: self._mark_succeeded(lease.job_id, lease.attempt,
                                                                                 _jsonable(result)))
        job_metrics.job_outcome(self.service, row["kind"], "succeeded" if recorded else "lost")

    async def _call(self, kind: JobKind, context: JobContext, raw_args: Any) -> Any:
        args: BaseModel = kind.parse(raw_args)
        deadline = asyncio.timeout(kind.timeout_seconds)
        try:
            async with deadline:
                return await self.handlers[kind.name](context, args)
        except TimeoutError as exc:
            if deadline.expired():  # not a TimeoutError of the handler's own, such as an SMTP timeout
                raise JobTimeout() from exc
            raise

    async def _write_outcome(self, lease: Lease, write: Callable[[], Awaitable[bool]]) -> bool:
        """Write an outcome, retrying while Postgres is away and the lease lasts; False when it was refused."""
        while True:
            try:
                recorded = await write()
                break
            except TRANSIENT_ERRORS as exc:
                if lease.lost is not None or time.monotonic() > lease.renewed_at + self.fence_after_seconds:
                    log.warning("outcome not recorded: database unavailable until the lease ran out",
                                extra={"job_id": str(lease.job_id), "error": repr(exc)})
                    return False
                await asyncio.sleep(OUTCOME_RETRY_PAUSE_SECONDS)
        if not recorded:
            log.warning("outcome refused: this worker no longer holds the job's lease",
                        extra={"job_id": str(lease.job_id), "attempt": lease.attempt})
        return recorded

    async def _claim(self, job_id: uuid.UUID, attempt: int) -> asyncpg.Record | None:
        """The claimed row, or None when this delivery may not run the job."""
        outcome = await self._writes.submit(_Claim(job_id, attempt))
        if isinstance(outcome, Exception):
            raise outcome
        assert not isinstance(outcome, bool)
        return outcome

    async def _mark_succeeded(self, job_id: uuid.UUID, attempt: int, result: Any) -> bool:
        """Whether the outcome counted (the lease was still this worker's)."""
        outcome = await self._writes.submit(_Success(job_id, attempt, result))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome is True

    async def _flush_writes(self, writes: list[_Claim | _Success]) -> list[_WriteResult]:
        """The claims and `succeeded` outcomes waiting together, written in one statement when both are there.

        Should Postgres refuse that statement for something other than an outage (a result it cannot store),
        the claims and the outcomes are written apart, so an outcome's bad value never fails a claim; each
        group's error goes to its own callers. An outage fails them all, as each write would have alone.
        """
        claims = [(write.job_id, write.attempt) for write in writes if isinstance(write, _Claim)]
        outcomes = [(write.job_id, write.attempt, write.result) for write in writes if isinstance(write, _Success)]
        claimed: dict[uuid.UUID, asyncpg.Record] | Exception = {}
        marked: set[uuid.UUID] | Exception = set()
        together = bool(claims and outcomes)
        if together and {job_id for job_id, _ in claims} & {job_id for job_id, _, _ in outcomes}:
            together = False  # a job finishing here and delivered again: one statement may update a row once
        if together:
            try:
                claimed, marked = await job_queries.claim_many_and_mark_succeeded(
                    self.pool, self.worker_id, claims, outcomes, lease_seconds=self.lease_seconds)
            except asyncpg.PostgresError as exc:
                if isinstance(exc, TRANSIENT_ERRORS):
                    raise
                together = False
        if not together:
            if outcomes:
                try:
                    marked = await job_queries.mark_succeeded_many(self.pool, self.worker_id, outcomes)
                except Exception as exc:  # handed to this group's callers
                    marked = exc
            if claims:
                try:
                    claimed = await job_queries.claim_many(self.pool, self.worker_id, claims,
                                                           lease_seconds=self.lease_seconds)
                except Exception as exc:  # handed to this group's callers
                    claimed = exc
        results: list[_WriteResult] = []
        for write in writes:
            if isinstance(write, _Claim):
                # pop: a job delivered twice in one batch goes to the first delivery; the other is skipped.
                results.append(claimed if isinstance(claimed, Exception) else claimed.pop(write.job_id, None))
            else:
                results.append(marked if isinstance(marked, Exception) else write.job_id in marked)
        return results

    async def _fail(self, row: asyncpg.Record, lease: Lease, kind: JobKind, failure: Failure, body: bytes) -> None:
        policy = policy_for(kind, self.default_retry)
        decision = policy.decide(row["attempt"], permanent=failure.permanent, max_attempts=row["max_attempts"])
        if isinstance(decision, Retry):
            reason = f"{failure.reason}; retry in {decision.delay_seconds}s"
            if not await self._write_outcome(lease, lambda: job_queries.mark_attempt_failed(
                self.pool, row["id"], row["attempt"], self.worker_id, state=JobState.RETRYING, reason=reason,
                error=failure.error, traceback=failure.traceback, retry_in_seconds=decision.delay_seconds,
            )):
                return
            job_metrics.job_outcome(self.service, row["kind"], "retried")
            try:
                await self.broker.publish_retry(
                    row["service"], Envelope.from_row(row), row["priority"],
                    decision.delay_seconds,
                )
            except BrokerUnavailable:
                # The row says `retrying` with its retry_at: the scheduler republishes an overdue retry.
                log.warning("retry not published; the overdue-retry sweeper will", extra={"job_id": str(row["id"])})
            return
        assert isinstance(decision, GiveUp)
        reason = f"{failure.reason}: {decision.reason}" if failure.permanent is False else failure.reason
        if await self._write_outcome(lease, lambda: job_queries.mark_attempt_failed(
            self.pool, row["id"], row["attempt"], self.worker_id, state=JobState.FAILED, reason=reason,
            error=failure.error, traceback=failure.traceback,
        )):
            job_metrics.job_outcome(self.service, row["kind"], "failed")
            await self._park(body, f"{reason}: {failure.error}", {"job_id": str(row["id"]), "kind": row["kind"]})

    async def _release(self, lease: Lease) -> None:
        """Graceful shutdown ran out of time: the job goes back to `enqueued` and to its queue."""
        try:
            rows = await job_queries.release(self.pool, [(lease.job_id, lease.attempt)], self.worker_id,
                                             "worker shutdown")
            await self.client.publish(list(rows))
        except TRANSIENT_ERRORS:
            log.warning("could not release a job at shutdown; its lease will expire",
                        extra={"job_id": str(lease.job_id)})

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every_seconds)
            try:
                await self.renew_leases()
            except Exception:  # the keeper must outlive any error: it is what stops jobs in time
                log.exception("lease renewal round failed")

    async def renew_leases(self) -> None:
        """Renew every held lease in one statement; stop the runs whose lease is gone or about to lapse."""
        # Checked before renewing too: a process waking from a freeze stops what it may no longer run before
        # it waits on anything, so none of those handlers gets to run another step.
        self._fence_overdue()
        held = [lease for lease in self._leases.values() if lease.lost is None]
        if held:
            sent = time.monotonic()
            try:
                async with asyncio.timeout(self.renew_every_seconds):
                    kept = await job_queries.renew_leases(
                        self.pool, self.worker_id, [(lease.job_id, lease.attempt) for lease in held],
                        self.lease_seconds,
                    )
            except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("could not renew job leases", extra={"jobs": len(held), "error": repr(exc)})
            else:
                for lease in held:
                    if lease.job_id in kept:
                        lease.renewed_at = max(lease.renewed_at, sent)
                    elif lease.running():  # not finished here meanwhile (its outcome may have just committed)
                        self._lose(lease, "the job was cancelled, taken over, deleted or finished elsewhere")
        self._fence_overdue()
        await self._store_dropped()

    def _fence_overdue(self) -> None:
        now = time.monotonic()
        for lease in list(self._leases.values()):
            # A handler that already returned is not stopped: its outcome write is fenced on its own.
            if lease.lost is None and lease.running() and now > lease.renewed_at + self.fence_after_seconds:
                self._lose(lease, "the lease could not be renewed in time (self-fencing)")

    def _lose(self, lease: Lease, reason: str) -> None:
        lease.lost = reason
        lease.stop.set()
        log.warning("lease lost; stopping the job", extra={"job_id": str(lease.job_id), "reason": reason})
        if lease.task is not None and not lease.task.done():
            lease.task.cancel()

    async def _store_dropped(self) -> None:
        if not self._dropped:
            return
        counts, self._dropped = dict(self._dropped), Counter()
        try:
            await job_queries.count_dropped(self.pool, self.service, counts)
        except (*TRANSIENT_ERRORS, asyncpg.PostgresError):
            self._dropped.update(counts)  # kept for the next round

    async def _park(self, body: bytes, reason: str, headers: dict[str, Any]) -> bool:
        log.warning("parked message", extra={"reason": reason, **headers})
        try:
            await self.broker.publish_dead(body, reason, {**headers, "service": self.service})
        except BrokerUnavailable:
            log.error("could not copy a message to the parking lot", extra={"reason": reason})
            return False
        job_metrics.MESSAGES_PARKED.labels(self.service).inc()
        return True


def skip_reason(verdict: asyncpg.Record, message_attempt: int) -> str:
    """Why a delivery of an existing job was not run, as a /metrics label."""
    state: str = verdict["state"]
    if state in ("succeeded", "failed", "deleted", "cancelled", "skipped"):
        return "finished"
    if state == "processing" and verdict["lease_live"]:
        return "lease_live"  # its holder may be running it right now
    if state in ("retrying", "processing") and verdict["attempt"] != message_attempt:
        return "stale_attempt"
    if state == "retrying" and verdict["retry_early"]:
        return "retry_not_due"
    if state == "processing":
        return "attempts_exhausted"
    return state  # scheduled: a copy published before an operator moved it back


def _jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if result is None or isinstance(result, (str, int, float, bool, list, dict)):
        return result
    return str(result)
