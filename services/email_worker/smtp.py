"""Sending messages over SMTP (aiosmtplib), with the server's reply classified for the retry policy.

`Mailer` keeps a bounded pool of open connections (SMTP_POOL_SIZE) and reuses them message after message.
A connection that the server closed or answered 421 on (idle timeout, restart) is dropped; when that
happens before MAIL FROM was accepted on a reused connection, nothing was sent and the message is tried
once more on a fresh connection. A timeout or a lost connection after that point is a deferral (the job
retries): the message may have reached the server, which is the send lease's remaining window.
"""

from __future__ import annotations

import asyncio
import time
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


IDLE_SECONDS = 30.0  # a connection unused this long is closed rather than reused (servers drop idle ones)


class _Stale(Exception):
    """A reused connection turned out closed before anything of this message was sent."""


def _closes_connection(exc: BaseException) -> bool:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code == 421  # "service not available, closing transmission channel"
    return True  # disconnected, timed out, TLS or socket errors: the session state is unknown


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.username = settings.smtp_username
        self.password = settings.smtp_password
        self.starttls = settings.smtp_starttls
        self.timeout = settings.smtp_timeout_seconds
        self.size = settings.smtp_pool_size
        self._slots = asyncio.Semaphore(self.size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # most recently used last
        self.opened = 0  # connections opened so far (for tests and the benchmark)

    async def send(self, message: EmailMessage) -> SmtpReply:
        """Deliver to the message's one To address; the DATA reply on success, else SmtpDeferred/SmtpRejected."""
        async with self._slots:
            client, reused = await self._take()
            try:
                try:
                    return await self._conversation(client, message, reused)
                except _Stale:
                    client = await self._open()
                    return await self._conversation(client, message, reused=False)
            except aiosmtplib.SMTPResponseException as exc:
                reply = SmtpReply(exc.code, exc.message)
                if 500 <= exc.code < 600 and not isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                    raise SmtpRejected(reply) from exc
                raise SmtpDeferred(reply) from exc
            except (aiosmtplib.SMTPException, OSError) as exc:  # refused, reset, timed out, TLS failure
                raise SmtpDeferred(SmtpReply(None, f"{type(exc).__name__}: {exc}")) from exc

    async def _conversation(self, client: aiosmtplib.SMTP, message: EmailMessage, reused: bool) -> SmtpReply:
        keep = False
        try:
            try:
                await client.mail(str(message["From"]))
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException, OSError) as exc:
                if reused and _closes_connection(exc):
                    raise _Stale() from exc
                raise
            await client.rcpt(str(message["To"]))
            response = await client.data(message.as_bytes())
            keep = True
            return SmtpReply(response.code, response.message)
        except aiosmtplib.SMTPResponseException as exc:
            # A refused recipient or message leaves the session usable once it is reset.
            keep = not _closes_connection(exc) and await self._reset(client)
            raise
        finally:
            if keep:
                self._idle.append((client, time.monotonic()))
            else:
                client.close()

    async def _take(self) -> tuple[aiosmtplib.SMTP, bool]:
        now = time.monotonic()
        while self._idle:
            client, used = self._idle.pop()
            if now - used < IDLE_SECONDS and client.is_connected:
                return client, True
            client.close()
        return await self._open(), False

    async def _open(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout, start_tls=self.starttls,
            username=self.username, password=self.password,
        )
        await client.connect()
        self.opened += 1
        return client

    async def _reset(self, client: aiosmtplib.SMTP) -> bool:
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            return False
        return True

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[0].close()
