"""The email worker's SMTP connection pool against an aiosmtpd sink: reuse, a bound, reconnects."""

from __future__ import annotations

import asyncio
import email.utils
from datetime import UTC, datetime

import pytest

from services.email_worker.compose import Outgoing, build, template_environment
from services.email_worker.smtp import Mailer, SmtpDeferred, SmtpRejected
from tests.support.environment import TestEnvironment
from tests.support.smtp import SmtpSink


def message(n: int) -> email.message.EmailMessage:
    return build(template_environment(), Outgoing(
        sender="events@localhost", recipient=f"p{n}@example.com", subject=f"Hello {n}", template="plain",
        context={"body": "hi"}, message_id=f"<m{n}@eventjobs>", date=datetime.now(UTC)))


async def test_messages_reuse_at_most_pool_size_connections(env: TestEnvironment, sink: SmtpSink) -> None:
    mailer = Mailer(env.settings(smtp_port=sink.port, smtp_pool_size=3))
    replies = await asyncio.gather(*(mailer.send(message(n)) for n in range(30)))

    assert {reply.code for reply in replies} == {250}
    assert len(sink.messages) == 30
    assert mailer.opened == sink.connections <= 3
    mailer.close()


async def test_a_421_on_a_reused_connection_reconnects_and_sends_once(env: TestEnvironment, sink: SmtpSink) -> None:
    mailer = Mailer(env.settings(smtp_port=sink.port, smtp_pool_size=1))
    await mailer.send(message(0))
    sink.refuse_mail("421 4.4.2 idle too long, closing")

    reply = await mailer.send(message(1))

    assert reply.code == 250
    assert [item.message_id for item in sink.messages] == ["<m0@eventjobs>", "<m1@eventjobs>"]
    assert mailer.opened == 2
    mailer.close()


async def test_a_rejected_recipient_leaves_the_connection_usable(env: TestEnvironment, sink: SmtpSink) -> None:
    mailer = Mailer(env.settings(smtp_port=sink.port, smtp_pool_size=1))
    sink.reject("p1@example.com")
    await mailer.send(message(0))
    with pytest.raises(SmtpRejected):
        await mailer.send(message(1))
    await mailer.send(message(2))

    assert len(sink.messages) == 2 and mailer.opened == 1
    mailer.close()


async def test_a_421_on_a_fresh_connection_is_a_deferral(env: TestEnvironment, sink: SmtpSink) -> None:
    mailer = Mailer(env.settings(smtp_port=sink.port, smtp_pool_size=1))
    sink.refuse_mail("421 4.3.2 shutting down")
    with pytest.raises(SmtpDeferred, match="421"):
        await mailer.send(message(0))
    assert (await mailer.send(message(1))).code == 250  # the next message gets a new connection
    assert mailer.opened == 2
    mailer.close()
