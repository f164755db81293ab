"""Pure message building: a rendered template and its headers become one multipart EmailMessage.

No I/O here besides reading the packaged templates; the handlers decide what to send and to whom.
"""

from __future__ import annotations

import email.policy
import email.utils
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2

from shared.kinds import header_problem

TEMPLATES_DIR = Path(__file__).parent / "templates"
MESSAGE_ID_DOMAIN = "eventjobs"


class ComposeError(ValueError):
    """The message cannot be built: retrying the same arguments can never help."""


@dataclass(frozen=True)
class Outgoing:
    sender: str
    recipient: str
    subject: str
    template: str
    context: Mapping[str, Any]
    message_id: str
    date: datetime


def message_id_for(job_id: uuid.UUID) -> str:
    """Derived from the job id, so every attempt of one job sends the same Message-ID."""
    return f"<{job_id}@{MESSAGE_ID_DOMAIN}>"


def one_line(text: str) -> str:
    """Domain text (an event title) put into a header: whitespace runs, line breaks included, become a space."""
    return " ".join(text.split())


def template_environment(directory: Path = TEMPLATES_DIR) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        # Only the HTML part is escaped; the text part is shown as typed.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(environment: jinja2.Environment, template: str, context: Mapping[str, Any]) -> tuple[str, str]:
    """The text and HTML bodies of `template`."""
    try:
        text = environment.get_template(f"{template}.txt").render(context)
        html = environment.get_template(f"{template}.html").render(context)
    except jinja2.TemplateNotFound as exc:
        raise ComposeError(f"unknown email template {template!r}") from exc
    except jinja2.UndefinedError as exc:
        raise ComposeError(f"template {template!r}: {exc}") from exc
    return text, html


def check_header(name: str, value: str) -> str:
    """A header value the email package can write as one line; anything else can never be sent (no retry)."""
    problem = header_problem(value)
    if problem is not None:
        raise ComposeError(f"{name} {problem.replace('must not contain', 'contains')}: "
                           "refused as header injection")
    return value


def compose(outgoing: Outgoing, text: str, html: str) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = check_header("sender", outgoing.sender)
    message["To"] = check_header("recipient", outgoing.recipient)
    message["Subject"] = check_header("subject", outgoing.subject)
    message["Message-ID"] = check_header("Message-ID", outgoing.message_id)
    message["Date"] = email.utils.format_datetime(outgoing.date)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def build(environment: jinja2.Environment, outgoing: Outgoing) -> EmailMessage:
    text, html = render(environment, outgoing.template, outgoing.context)
    try:
        return compose(outgoing, text, html)
    except ValueError as exc:  # whatever else the email package refuses is just as permanent
        if isinstance(exc, ComposeError):
            raise
        raise ComposeError(f"the message cannot be built: {exc}") from exc
