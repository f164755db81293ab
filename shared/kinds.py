"""The platform's job kinds: argument models, target service, queue class, timeout.

The api validates against these before writing; the workers attach handlers to them by name.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.jobs import QueueClass
from shared.limits import SMTP_GROUP, KindLimits
from shared.registry import JobKind, Registry

EMAIL_SERVICE = "email"
MAINTENANCE_SERVICE = "maintenance"

_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")


# Unicode categories a header value must not hold: control characters (CR, LF, TAB, NUL, U+0085 NEL ...)
# and the line/paragraph separators U+2028/U+2029. Python's email package splits lines on several of these,
# so any of them would either inject a header or make the message unbuildable.
FORBIDDEN_IN_HEADERS = frozenset({"Cc", "Zl", "Zp"})


def header_problem(value: str) -> str | None:
    """Why `value` cannot be one header line, or None."""
    for char in value:
        if unicodedata.category(char) in FORBIDDEN_IN_HEADERS:
            return f"must not contain control characters or line breaks (found U+{ord(char):04X})"
    return None


def no_line_breaks(value: str) -> str:
    """A control character or line separator in a header value would inject headers or break the message."""
    problem = header_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def email_address(value: str) -> str:
    no_line_breaks(value)
    if not _ADDRESS.match(value):
        raise ValueError("is not an email address")
    return value


EmailAddress = Annotated[str, Field(max_length=320), AfterValidator(email_address)]
HeaderText = Annotated[str, Field(min_length=1, max_length=998), AfterValidator(no_line_breaks)]


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(Args):
    pass


class WelcomeArgs(Args):
    email: EmailAddress
    name: HeaderText


class EventConfirmationArgs(Args):
    event_id: uuid.UUID
    participant_id: uuid.UUID


class EventArgs(Args):
    event_id: uuid.UUID
    # The schedule this run belongs to (set by the events API); a run for an older revision does nothing.
    # Left out (an operator's manual run), the event's current schedule is meant.
    starts_at: datetime | None = None
    schedule_revision: int | None = None


class ReminderReportArgs(Args):
    event_id: uuid.UUID
    reminder: str  # the fan-out kind whose batch this reports on


class SendEmailArgs(Args):
    to: EmailAddress
    subject: HeaderText
    template: Annotated[str, Field(pattern=r"^[a-z_]+$")] = "plain"
    context: dict[str, Any] = {}
    event_id: uuid.UUID | None = None
    participant_id: uuid.UUID | None = None
    schedule_revision: int | None = None  # a reminder send: part of that event schedule, deleted when it moves


# The kinds that talk to the SMTP server share its rate (SMTP_RATE_PER_SECOND); the maintenance jobs that
# scan whole tables never overlap themselves (a slow run and the next occurrence, or a manual trigger).
SENDS_EMAIL = KindLimits(group=SMTP_GROUP)
ONE_AT_A_TIME = KindLimits(concurrency=1)

# Each kind is declared once, here; its handler carries `@handles(KIND)` in its service's worker.
PLATFORM = Registry()
EMAIL_WELCOME = PLATFORM.add(JobKind("email.welcome", WelcomeArgs, EMAIL_SERVICE, QueueClass.CRITICAL,
                                     timeout_seconds=120, limits=SENDS_EMAIL))
EMAIL_EVENT_CONFIRMATION = PLATFORM.add(JobKind("email.event_confirmation", EventConfirmationArgs, EMAIL_SERVICE,
                                                QueueClass.DEFAULT, timeout_seconds=120, limits=SENDS_EMAIL))
EVENT_REMINDER = PLATFORM.add(JobKind("event.reminder", EventArgs, EMAIL_SERVICE, QueueClass.DEFAULT,
                                      timeout_seconds=600, before_event=timedelta(days=1)))
EVENT_STARTING_SOON = PLATFORM.add(JobKind("event.starting_soon", EventArgs, EMAIL_SERVICE, QueueClass.CRITICAL,
                                           timeout_seconds=600, before_event=timedelta(minutes=30)))
EMAIL_SEND = PLATFORM.add(JobKind("email.send", SendEmailArgs, EMAIL_SERVICE, QueueClass.DEFAULT,
                                  timeout_seconds=120, limits=SENDS_EMAIL))
# The callback of a reminder fan-out's batch: "reminder for event X sent to N of M".
EVENT_REMINDER_REPORT = PLATFORM.add(JobKind("event.reminder_report", ReminderReportArgs, EMAIL_SERVICE,
                                             QueueClass.LOW, timeout_seconds=60))
CLEANUP_EXPIRED_EVENTS = PLATFORM.add(JobKind("maintenance.cleanup_expired_events", NoArgs, MAINTENANCE_SERVICE,
                                              QueueClass.LOW, timeout_seconds=1800, limits=ONE_AT_A_TIME))
CLEANUP_OLD_LOGS = PLATFORM.add(JobKind("maintenance.cleanup_old_logs", NoArgs, MAINTENANCE_SERVICE,
                                        QueueClass.LOW, timeout_seconds=1800, limits=ONE_AT_A_TIME))
DAILY_REPORT = PLATFORM.add(JobKind("maintenance.daily_report", NoArgs, MAINTENANCE_SERVICE, QueueClass.DEFAULT,
                                    timeout_seconds=600, limits=ONE_AT_A_TIME))
REAP_DEAD_SERVERS = PLATFORM.add(JobKind("maintenance.reap_dead_servers", NoArgs, MAINTENANCE_SERVICE,
                                         QueueClass.CRITICAL, timeout_seconds=300))

PLATFORM_KINDS = tuple(PLATFORM)


def platform_registry() -> Registry:
    return Registry(PLATFORM_KINDS)
