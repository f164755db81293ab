"""Handlers of the email service's job kinds.

Every message goes through `deliver`: claim the `emails` row (a key already `sent` is never sent
again), compose, send, record the SMTP reply. Fan-out kinds only enqueue one `email.send` per
participant under an idempotency key, so a rerun enqueues nothing new and one bad address retries alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import jinja2

from services.email_worker.compose import ComposeError, Outgoing, build, message_id_for, one_line, template_environment
from services.email_worker.smtp import Mailer, SmtpDeferred, SmtpRejected
from shared.client import IdempotencyConflict
from shared.db import emails, events
from shared.jobs import QueueClass
from shared.kinds import EventArgs, EventConfirmationArgs, SendEmailArgs, WelcomeArgs
from shared.messaging.consumer import Handler, JobContext
from shared.registry import InvalidJobArguments, PermanentError
from shared.settings import Settings

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


REMINDER = FanOut("event.reminder", "event_reminder", "Reminder", QueueClass.DEFAULT)
STARTING_SOON = FanOut("event.starting_soon", "event_starting_soon", "Starting soon", QueueClass.CRITICAL)


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

    def handlers(self) -> dict[str, Handler]:
        return {
            "email.welcome": self.welcome,
            "email.event_confirmation": self.event_confirmation,
            "event.reminder": self.reminder,
            "event.starting_soon": self.starting_soon,
            "email.send": self.send,
        }

    def when(self, moment: datetime) -> str:
        return moment.astimezone(self.timezone).strftime("%A %d %B %Y, %H:%M %Z")

    def event_context(self, event: asyncpg.Record, name: str) -> dict[str, Any]:
        return {
            "name": name, "title": event["title"], "starts_at": event["starts_at"].isoformat(),
            "starts_at_text": self.when(event["starts_at"]), "location": event["location"],
        }

    async def welcome(self, ctx: JobContext, args: WelcomeArgs) -> dict[str, Any]:
        return await self.deliver(ctx, Mail(
            key=f"email.welcome:{ctx.job_id}", recipient=args.email,
            subject=subject_line(f"Welcome to eventjobs, {args.name}"), template="welcome",
            context={"name": args.name, "email": args.email},
        ))

    async def event_confirmation(self, ctx: JobContext, args: EventConfirmationArgs) -> dict[str, Any]:
        event = await events.get_event(ctx.pool, args.event_id)
        participant = await emails.get_participant(ctx.pool, args.participant_id)
        reason = skip_reason(event)
        if reason is None and (participant is None or participant["event_id"] != args.event_id):
            reason = "the participant is no longer registered for the event"
        if reason is not None or event is None or participant is None:
            ctx.log.info("confirmation for event %s not sent: %s", args.event_id, reason)
            return {"skipped": reason}
        return await self.deliver(ctx, Mail(
            key=f"email.event_confirmation:{args.event_id}:{args.participant_id}",
            recipient=participant["email"], subject=subject_line("You are registered", event["title"]),
            template="event_confirmation",
            context={**self.event_context(event, participant["name"]), "description": event["description"]},
            event_id=args.event_id, participant_id=args.participant_id,
        ))

    async def reminder(self, ctx: JobContext, args: EventArgs) -> dict[str, Any]:
        return await self.fan_out(ctx, REMINDER, args)

    async def starting_soon(self, ctx: JobContext, args: EventArgs) -> dict[str, Any]:
        return await self.fan_out(ctx, STARTING_SOON, args)

    async def send(self, ctx: JobContext, args: SendEmailArgs) -> dict[str, Any]:
        if args.event_id is not None:
            event = await events.get_event(ctx.pool, args.event_id)
            reason = skip_reason(event)
            if reason is None and event is not None:
                reason = outdated(event, args.schedule_revision)
            if reason is None and args.participant_id is not None:
                participant = await emails.get_participant(ctx.pool, args.participant_id)
                if participant is None or participant["event_id"] != args.event_id:
                    reason = "the participant is no longer registered for the event"
            if reason is not None:
                ctx.log.info("%s to %s not sent: %s", args.template, args.to, reason)
                return {"skipped": reason}
        key = await emails.job_idempotency_key(ctx.pool, ctx.job_id) or f"email.send:{ctx.job_id}"
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
        while True:
            page = await emails.participants_page(ctx.pool, event_id, after, FANOUT_PAGE)
            outcomes = await asyncio.gather(
                *(self.enqueue_one(ctx, fan_out, event, participant, subject) for participant in page),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    # What was enqueued stays enqueued; the retry finds those keys taken and goes on.
                    raise outcome
                totals[outcome] += 1
            if len(page) < FANOUT_PAGE:
                break
            after = page[-1]["email"]
        ctx.log.info("%s for event %s: %d new email.send jobs, %d already enqueued, %d invalid addresses",
                     fan_out.kind, event_id, totals["created"], totals["existing"], totals["invalid"])
        return {"participants": sum(totals.values()), **totals}

    async def enqueue_one(
        self, ctx: JobContext, fan_out: FanOut, event: asyncpg.Record, participant: asyncpg.Record, subject: str
    ) -> str:
        key = fanout_key(fan_out.kind, event, participant["id"])
        args = {
            "to": participant["email"], "subject": subject, "template": fan_out.template,
            "context": self.event_context(event, participant["name"]),
            "event_id": str(event["id"]), "participant_id": str(participant["id"]),
            "schedule_revision": event["schedule_revision"],
        }
        try:
            job = await ctx.client.enqueue("email.send", args, queue=fan_out.queue, idempotency_key=key,
                                           parent_id=ctx.job_id)
        except IdempotencyConflict:
            return "existing"  # enqueued by an earlier run, before the event's text was edited
        except InvalidJobArguments as exc:
            ctx.log.warning("participant %s skipped: %s", participant["id"], exc)
            return "invalid"
        return "created" if job is not None and job.created else "existing"

    async def deliver(self, ctx: JobContext, mail: Mail) -> dict[str, Any]:
        row = await emails.claim(ctx.pool, emails.NewEmail(
            idempotency_key=mail.key, job_id=ctx.job_id, recipient=mail.recipient, subject=mail.subject,
            template=mail.template, message_id=message_id_for(ctx.job_id), event_id=mail.event_id,
            participant_id=mail.participant_id,
        ))
        if row is None:
            ctx.log.info("%s to %s not sent again: key %s is already sent", mail.template, mail.recipient, mail.key)
            return {"status": "already sent", "key": mail.key}
        outgoing = Outgoing(
            sender=self.sender, recipient=mail.recipient, subject=mail.subject, template=mail.template,
            context=mail.context, message_id=row["message_id"], date=datetime.now(UTC),
        )
        try:
            message = build(self.environment, outgoing)
        except ComposeError as exc:
            await emails.record_failure(ctx.pool, mail.key, None, str(exc), final=True)
            raise PermanentError(str(exc)) from exc
        try:
            reply = await self.mailer.send(message)
        except SmtpRejected as exc:
            await emails.record_failure(ctx.pool, mail.key, exc.reply.code, exc.reply.text, final=True)
            raise PermanentError(f"{mail.recipient} rejected: {exc}") from exc
        except SmtpDeferred as exc:
            final = ctx.attempt >= ctx.max_attempts
            await emails.record_failure(ctx.pool, mail.key, exc.reply.code, exc.reply.text, final=final)
            raise
        await emails.record_sent(ctx.pool, mail.key, reply.code, reply.text)
        ctx.log.info("sent %s to %s as %s: %s %s", mail.template, mail.recipient, row["message_id"],
                     reply.code, reply.text)
        return {"status": "sent", "key": mail.key, "message_id": row["message_id"], "smtp_code": reply.code,
                "smtp_reply": reply.text}


def build_handlers(settings: Settings) -> dict[str, Handler]:
    return EmailHandlers(settings, Mailer(settings), template_environment()).handlers()
