"""SMTP_STARTTLS and SMTP_USERNAME/PASSWORD against an aiosmtpd server that demands both."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from services.email_worker.smtp import Mailer
from shared.settings import Settings
from tests.support.smtp import free_port

USER, PASSWORD = "mailer", "s3cret"


class Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[str, bool, bool]] = []  # (recipient, over TLS, authenticated)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.received.append((envelope.rcpt_tos[0], session.ssl is not None, session.authenticated))
        return "250 OK"


def authenticate(server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok)


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, trusted by this process for the test."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return cert, key


@pytest.fixture
def tls_sink(certificate: tuple[Path, Path]) -> Iterator[tuple[int, Recorder]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    recorder, port = Recorder(), free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=authenticate, auth_require_tls=True, auth_required=True)
    controller.start()
    try:
        yield port, recorder
    finally:
        controller.stop()


def message(to: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "events@localhost", to, "over TLS"
    mail.set_content("hello")
    return mail


def mailer(port: int, **overrides: Any) -> Mailer:
    values = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": True, "smtp_username": USER,
              "smtp_password": PASSWORD, "smtp_timeout_seconds": 10, **overrides}
    return Mailer(Settings(_env_file=None, **values))  # type: ignore[call-arg]


async def test_starttls_and_login_deliver_to_a_server_that_requires_them(tls_sink: tuple[int, Recorder]) -> None:
    port, recorder = tls_sink
    reply = await mailer(port).send(message("ada@example.com"))
    assert reply.code == 250
    assert recorder.received == [("ada@example.com", True, True)]

