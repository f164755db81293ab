"""An aiosmtpd sink for tests: records every message, and can be told to defer (451) or reject (550)."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from tests.support.waiting import eventually


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage
    started: float = 0.0  # time.time() at MAIL FROM: the conversation for this message began
    accepted: float = 0.0  # time.time() when the 250 for DATA was decided

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def body(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part"
        return cast(str, cast(EmailMessage, part).get_content())


class SinkHandler:
    """Runs in the controller's thread; the test's loop reads what it records under the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.deferrals_left = 0
        self.deferral_reply = "451 4.3.0 try again later"
        self.deferred = 0
        self.rejections: dict[str, str] = {}
        self.started: dict[int, float] = {}
        self.connections = 0
        self.mail_replies: list[str] = []  # answers for the next MAIL FROMs instead of 250

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.connections += 1  # once per SMTP connection (a client says EHLO again after STARTTLS)
        return responses

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        with self.lock:
            if self.mail_replies:
                return self.mail_replies.pop(0)
            self.started[id(envelope)] = time.time()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        with self.lock:
            rejection = self.rejections.get(address.lower())
        if rejection is not None:
            return rejection
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.deferrals_left > 0:
                self.deferrals_left -= 1
                self.deferred += 1
                return self.deferral_reply
            message = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
            self.received.append(
                Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), cast(EmailMessage, message),
                         started=self.started.pop(id(envelope), 0.0), accepted=time.time())
            )
            return f"250 2.0.0 OK queued as {len(self.received)}"


class SmtpSink:
    def __init__(self, handler: SinkHandler, port: int) -> None:
        self.handler = handler
        self.port = port

    def defer(self, times: int, reply: str = "451 4.3.0 try again later") -> None:
        """Answer the next `times` messages' DATA with a temporary failure."""
        with self.handler.lock:
            self.handler.deferrals_left = times
            self.handler.deferral_reply = reply

    def refuse_mail(self, *replies: str) -> None:
        """Answer the next MAIL FROMs with these replies (e.g. 421, as a server closing an idle connection)."""
        with self.handler.lock:
            self.handler.mail_replies.extend(replies)

    def reject(self, recipient: str, reply: str = "550 5.1.1 no such user here") -> None:
        with self.handler.lock:
            self.handler.rejections[recipient.lower()] = reply

    @property
    def connections(self) -> int:
        """EHLO greetings received: SMTP connections opened (a STARTTLS connection counts twice)."""
        with self.handler.lock:
            return self.handler.connections

    @property
    def deferred(self) -> int:
        with self.handler.lock:
            return self.handler.deferred

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def to(self, recipient: str) -> list[Received]:
        return [item for item in self.messages if recipient in item.recipients]

    def message_id_counts(self) -> Counter[str]:
        return Counter(item.message_id for item in self.messages)

    async def wait_for(self, count: int, *, timeout: float = 30.0, recipient: str | None = None) -> list[Received]:
        """At least `count` messages (to `recipient`, if given), waiting up to `timeout`."""

        async def enough() -> list[Received]:
            found = self.to(recipient) if recipient else self.messages
            return found if len(found) >= count else []

        return await eventually(enough, timeout=timeout, what=f"{count} message(s) in the SMTP sink")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def running_sink() -> AsyncIterator[SmtpSink]:
    handler = SinkHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=30)
    controller.start()
    try:
        yield SmtpSink(handler, port)
    finally:
        controller.stop()
