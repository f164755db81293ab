"""Handlers of the email service's job kinds.

Every message goes through `deliver`: claim the `emails` row (a key already `sent` is never sent
again), compose, send, record the SMTP reply. Fan-out kinds only enqueue one `email.send` per
participant under an idempotency key, so a rerun enqueues nothing new and one bad address retries alone.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import jinja2

from services.email_worker.compose import ComposeError, Outgoing, build, message_id_for, one_line, template_environment
from services.email_worker.smtp import Mailer, SmtpDeferred, SmtpRejected, SmtpReply
from shared.db import emails, events
from shared.db import jobs as job_queries
from shared.db import participants as participant_queries
from shared.handler_api import (
    Handler,
    IdempotencyConflict,
    InvalidJobArguments,
    JobContext,
    JobSpec,
    PermanentError,
    QueueClass,
    handlers_on,
    handles,
)
from shared.kinds import (
    EMAIL_EVENT_CONFIRMATION,
    EMAIL_SEND,
    EMAIL_WELCOME,
    EVENT_REMINDER,
    EVENT_REMINDER_REPORT,
    EVENT_STARTING_SOON,
    EventArgs,
    EventConfirmationArgs,
    ReminderReportArgs,
    SendEmailArgs,
    WelcomeArgs,
)
from shared.settings import Settings

LEASE_MARGIN_SECONDS = 2.0  # the local cut-off comes this long before the lease's end in the database
LEASE_POLL_SECONDS = 0.5  # how often a run waiting for another's lease looks again
FANOUT_PAGE = 500  # participants read and enqueued concurrently per round trip
SUBJECT_MAX = 200


@dataclass(frozen=True)
class Mail:
    key: str  # the emails row's idempotency key
    recipient: str
    subject: str
    template: str
    context: Mapping[str, Any] = field(default_factory=dict)
    event_id: uuid.UUID | None = None
    participant_id: uuid.UUID | None = None


@dataclass(frozen=True)
class FanOut:
    kind: str
    template: str
    subject_prefix: str
    queue: QueueClass


REMINDER = FanOut(EVENT_REMINDER.name, "event_reminder", "Reminder", QueueClass.DEFAULT)
STARTING_SOON = FanOut(EVENT_STARTING_SOON.name, "event_starting_soon", "Starting soon", QueueClass.CRITICAL)


def skip_reason(event: asyncpg.Record | None) -> str | None:
    """Why no mail about this event should go out any more, or None."""
    if event is None:
        return "the event no longer exists"
    if event["cancelled_at"] is not None:
        return f"the event was cancelled at {event['cancelled_at'].isoformat()}"
    if event["archived_at"] is not None:
        return f"the event was archived at {event['archived_at'].isoformat()}"
    return None


def subject_line(*parts: str) -> str:
    return one_line(": ".join(parts))[:SUBJECT_MAX]


def fanout_key(kind: str, event: asyncpg.Record, participant_id: uuid.UUID) -> str:
    """One send per (event, kind, start, schedule revision, participant): a moved event's new reminder is a new
    email, never mistaken for the one sent for the old time."""
    start = event["starts_at"].astimezone(UTC).isoformat()
    return f"{kind}:{event['id']}:{start}:r{event['schedule_revision']}:{participant_id}"


def outdated(event: asyncpg.Record, revision: int | None) -> str | None:
    """Why a run planned for schedule `revision` must not mail any more, or None (None: the current one)."""
    if revision is None or revision == event["schedule_revision"]:
        return None
    return (f"planned for schedule revision {revision}, but the event is at revision "
            f"{event['schedule_revision']} (starts {event['starts_at'].isoformat()})")


class EmailHandlers:
    def __init__(self, settings: Settings, mailer: Mailer, environment: jinja2.Environment) -> None:
        self.sender = settings.mail_from
        self.timezone = ZoneInfo(settings.scheduler_timezone)
        self.mailer = mailer
        self.environment = environment
        self.lease_seconds = settings.email_send_lease_seconds
        self.owner_prefix = f"{socket.gethostname()}:{os.getpid()}"

    def when(self, moment: datetime, timezone: str | None = None) -> str:
        """In the event's own zone when it has one (an event at 18:00 in Berlin is announced at 18:00 CEST)."""
        zone = self.timezone
        if timezone:
            try:
                zone = ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                pass  # validated by the api; a zone database without it falls back to the default
        return moment.astimezone(zone).strftime("%A %d %B %Y, %H:%M %Z")

    def event_context(self, event: asyncpg.Record, name: str) -> dict[str, Any]:
        timezone = event["timezone"] if "timezone" in event.keys() else None
        return {
            "name": name, "title": event["title"], "starts_at": event["starts_at"].isoformat(),
            "starts_at_text": self.when(event["starts_at"], timezone), "location": event["location"],
        }

    @handles(EMAIL_WELCOME)
    async def welcome(self, ctx: JobContext, args: WelcomeArgs) -> dict[str, Any]:
        return await self.deliver(ctx, Mail(
            key=f"{EMAIL_WELCOME.name}:{ctx.job_id}", recipient=args.email,
            subject=subject_line(f"Welcome to eventjobs, {args.name}"), template="welcome",
            context={"name": args.name, "email": args.email},
        ))

    @handles(EMAIL_EVENT_CONFIRMATION)
    async def event_confirmation(self, ctx: JobContext, args: EventConfirmationArgs) -> dict[str, Any]:
        event = await events.get_event(ctx.pool, args.event_id)
        participant = await participant_queries.get_participant(ctx.pool, args.participant_id)
        reason = skip_reason(event)
        if reason is None and (participant is None or participant["event_id"] != args.event_id):
            reason = "the participant is no longer registered for the event"
        if reason is not None or event is None or participant is None:
            ctx.log.info("confirmation for event %s not sent: %s", args.event_id, reason)
            return {"skipped": reason}
        return await self.deliver(ctx, Mail(
            key=f"{EMAIL_EVENT_CONFIRMATION.name}:{args.event_id}:{args.participant_id}",
            recipient=participant["email"], subject=subject_line("You are registered", event["title"]),
            template="event_confirmation",
            context={**self.event_context(event, participant["name"]), "description": event["description"]},
            event_id=args.event_id, participant_id=args.participant_id,
        ))

    @handles(EVENT_REMINDER)
    async def reminder(self, ctx: JobContext, args: EventArgs) -> dict[str, Any]:
        return await self.fan_out(ctx, REMINDER, args)

    @handles(EVENT_STARTING_SOON)
    async def starting_soon(self, ctx: JobContext, args: EventArgs) -> dict[str, Any]:
        return await self.fan_out(ctx, STARTING_SOON, args)

    @handles(EMAIL_SEND)
    async def send(self, ctx: JobContext, args: SendEmailArgs) -> dict[str, Any]:
        if args.event_id is not None:
            event = await events.get_event(ctx.pool, args.event_id)
            reason = skip_reason(event)
            if reason is None and event is not None:
                reason = outdated(event, args.schedule_revision)
            if reason is None and args.participant_id is not None:
                participant = await participant_queries.get_participant(ctx.pool, args.participant_id)
                if participant is None or participant["event_id"] != args.event_id:
                    reason = "the participant is no longer registered for the event"
            if reason is not None:
                ctx.log.info("%s to %s not sent: %s", args.template, args.to, reason)
                return {"skipped": reason}
        key = await job_queries.job_idempotency_key(ctx.pool, ctx.job_id) or f"{EMAIL_SEND.name}:{ctx.job_id}"
        return await self.deliver(ctx, Mail(
            key=key, recipient=args.to, subject=args.subject, template=args.template, context=args.context,
            event_id=args.event_id, participant_id=args.participant_id,
        ))

    async def fan_out(self, ctx: JobContext, fan_out: FanOut, args: EventArgs) -> dict[str, Any]:
        event_id = args.event_id
        event = await events.get_event(ctx.pool, event_id)
        reason = skip_reason(event)
        if reason is None and event is not None:
            reason = outdated(event, args.schedule_revision)
        if reason is not None or event is None:
            ctx.log.info("%s for event %s skipped: %s", fan_out.kind, event_id, reason)
            return {"skipped": reason}
        subject = subject_line(fan_out.subject_prefix, event["title"])
        totals: Counter[str] = Counter()
        after: str | None = None
        # Its sends are one batch whose callback reports how many went out; a retry of this job (same id)
        # reuses the batch, and its sends already enqueued are in it already.
        batch_id = uuid.uuid5(uuid.NAMESPACE_URL, f"eventjobs:fan-out:{ctx.job_id}")
        await ctx.client.open_batch(batch_id, JobSpec(EVENT_REMINDER_REPORT.name,
                                                      {"event_id": str(event_id), "reminder": fan_out.kind}))
        # The total is read once; registrations during the fan-out can make "done" pass it a little.
        total = await participant_queries.participant_count(ctx.pool, event_id)
        await ctx.progress(0, total, "participants enqueued")
        while True:
            page = await participant_queries.participants_page(ctx.pool, event_id, after, FANOUT_PAGE)
            outcomes = await asyncio.gather(
                *(self.enqueue_one(ctx, fan_out, event, participant, subject, batch_id) for participant in page),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    # What was enqueued stays enqueued; the retry finds those keys taken and goes on.
                    raise outcome
                totals[outcome] += 1
            done = sum(totals.values())
            await ctx.progress(done, max(total, done), "participants enqueued")
            if len(page) < FANOUT_PAGE:
                break
            after = page[-1]["email"]
        await ctx.client.seal_batch(batch_id)
        ctx.log.info("%s for event %s: %d new email.send jobs, %d already enqueued, %d invalid addresses",
                     fan_out.kind, event_id, totals["created"], totals["existing"], totals["invalid"])
        return {"participants": sum(totals.values()), **totals}

    @handles(EVENT_REMINDER_REPORT)
    async def reminder_report(self, ctx: JobContext, args: ReminderReportArgs) -> dict[str, Any]:
        """A fan-out's batch finished: how many of its sends succeeded."""
        batch = await job_queries.batch_of_callback(ctx.pool, ctx.job_id)
        if batch is None:
            raise PermanentError("this job is not the callback of a batch")
        ctx.log.info("%s for event %s sent to %d of %d (%d failed)", args.reminder, args.event_id,
                     batch["succeeded"], batch["total"], batch["failed"])
        return {"event_id": str(args.event_id), "reminder": args.reminder, "sent": batch["succeeded"],
                "of": batch["total"], "failed": batch["failed"]}

    async def enqueue_one(
        self, ctx: JobContext, fan_out: FanOut, event: asyncpg.Record, participant: asyncpg.Record, subject: str,
        batch_id: uuid.UUID,
    ) -> str:
        key = fanout_key(fan_out.kind, event, participant["id"])
        args = {
            "to": participant["email"], "subject": subject, "template": fan_out.template,
            "context": self.event_context(event, participant["name"]),
            "event_id": str(event["id"]), "participant_id": str(participant["id"]),
            "schedule_revision": event["schedule_revision"],
        }
        try:
            job = await ctx.client.enqueue(EMAIL_SEND.name, args, queue=fan_out.queue, idempotency_key=key,
                                           parent_id=ctx.job_id, batch_id=batch_id)
        except IdempotencyConflict:
            return "existing"  # enqueued by an earlier run, before the event's text was edited
        except InvalidJobArguments as exc:
            ctx.log.warning("participant %s skipped: %s", participant["id"], exc)
            return "invalid"
        return "created" if job is not None and job.created else "existing"

    async def take_lease(self, ctx: JobContext, mail: Mail, owner: str) -> tuple[asyncpg.Record | None, float]:
        """The `emails` row leased to `owner` and the loop time its lease ends, or (None, 0) when it was sent.

        A live lease of another run (a copy of this job still sending, or a worker that died mid-send) is
        waited out, never sent alongside: the row ends `sent` (nothing to do) or the lease expires (take over).
        """
        loop = asyncio.get_running_loop()
        new = emails.NewEmail(
            idempotency_key=mail.key, job_id=ctx.job_id, recipient=mail.recipient, subject=mail.subject,
            template=mail.template, message_id=message_id_for(ctx.job_id), event_id=mail.event_id,
            participant_id=mail.participant_id,
        )
        waited_for: str | None = None
        while True:
            asked = loop.time()  # before the claim: the local deadline is never later than the database's
            row = await emails.claim(ctx.pool, new, owner=owner, lease_seconds=self.lease_seconds)
            if row is not None:
                return row, asked + self.lease_seconds - LEASE_MARGIN_SECONDS
            lease = await emails.lease_of(ctx.pool, mail.key)
            if lease is None or lease.status == "sent":
                ctx.log.info("%s to %s not sent again: key %s is already sent", mail.template, mail.recipient,
                             mail.key)
                return None, 0.0
            if lease.owner != waited_for:
                waited_for = lease.owner
                ctx.log.info("%s to %s is being sent by %s (lease ends in %.1f s): waiting, not sending in parallel",
                             mail.template, mail.recipient, lease.owner, lease.seconds_left)
            await asyncio.sleep(min(max(lease.seconds_left, 0.05), LEASE_POLL_SECONDS))

    async def deliver(self, ctx: JobContext, mail: Mail) -> dict[str, Any]:
        owner = f"{self.owner_prefix}:{ctx.job_id}:{ctx.attempt}:{uuid.uuid4().hex[:8]}"
        row, deadline = await self.take_lease(ctx, mail, owner)
        if row is None:
            return {"status": "already sent", "key": mail.key}
        outgoing = Outgoing(
            sender=self.sender, recipient=mail.recipient, subject=mail.subject, template=mail.template,
            context=mail.context, message_id=row["message_id"], date=datetime.now(UTC),
        )
        try:
            message = build(self.environment, outgoing)
        except ComposeError as exc:
            await emails.record_failure(ctx.pool, mail.key, owner, None, str(exc), final=True)
            raise PermanentError(str(exc)) from exc
        try:
            # Cut off before the lease ends, so no other run can take over while this one still talks.
            async with asyncio.timeout_at(deadline):
                reply = await self.mailer.send(message)
        except SmtpRejected as exc:
            await emails.record_failure(ctx.pool, mail.key, owner, exc.reply.code, exc.reply.text, final=True)
            raise PermanentError(f"{mail.recipient} rejected: {exc}") from exc
        except (SmtpDeferred, TimeoutError) as exc:
            deferred = exc if isinstance(exc, SmtpDeferred) else SmtpDeferred(
                SmtpReply(None, f"the SMTP conversation outlasted the {self.lease_seconds:g} s send lease"))
            final = ctx.attempt >= ctx.max_attempts
            await emails.record_failure(ctx.pool, mail.key, owner, deferred.reply.code, deferred.reply.text,
                                        final=final)
            if deferred is exc:
                raise
            raise deferred from exc
        # Its own statement and commit, right after the 250: a crash after this point never sends again.
        await emails.record_sent(ctx.pool, mail.key, reply.code, reply.text)
        ctx.log.info("sent %s to %s as %s: %s %s", mail.template, mail.recipient, row["message_id"],
                     reply.code, reply.text)
        return {"status": "sent", "key": mail.key, "message_id": row["message_id"], "smtp_code": reply.code,
                "smtp_reply": reply.text}


def build_handlers(settings: Settings) -> dict[str, Handler]:
    return handlers_on(EmailHandlers(settings, Mailer(settings), template_environment()))
