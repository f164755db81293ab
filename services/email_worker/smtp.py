"""Sending one message over SMTP (aiosmtplib), with the server's reply classified for the retry policy."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from shared.settings import Settings


@dataclass(frozen=True)
class SmtpReply:
    code: int | None  # None: no reply at all (connection refused, timeout)
    text: str


class SmtpDeferred(Exception):
    """A 4xx reply or a connection problem: the same message may go through later."""

    def __init__(self, reply: SmtpReply) -> None:
        super().__init__(f"{reply.code or 'no reply'} {reply.text}".strip())
        self.reply = reply


class SmtpRejected(Exception):
    """A 5xx reply: the server refused this message or recipient for good."""

    def __init__(self, reply: SmtpReply) -> None:
        super().__init__(f"{reply.code} {reply.text}")
        self.reply = reply


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.username = settings.smtp_username
        self.password = settings.smtp_password
        self.starttls = settings.smtp_starttls
        self.timeout = settings.smtp_timeout_seconds

    async def send(self, message: EmailMessage) -> SmtpReply:
        """Deliver to the message's one To address; the DATA reply on success, else SmtpDeferred/SmtpRejected."""
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout, start_tls=self.starttls,
            username=self.username, password=self.password,
        )
        try:
            async with client:
                await client.mail(str(message["From"]))
                await client.rcpt(str(message["To"]))
                response = await client.data(message.as_bytes())
        except aiosmtplib.SMTPResponseException as exc:
            reply = SmtpReply(exc.code, exc.message)
            if 500 <= exc.code < 600 and not isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                raise SmtpRejected(reply) from exc
            raise SmtpDeferred(reply) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:  # refused, reset, timed out, TLS failure
            raise SmtpDeferred(SmtpReply(None, f"{type(exc).__name__}: {exc}")) from exc
        return SmtpReply(response.code, response.message)
