"""Message building without any server: headers, parts, escaping, refusals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.email_worker.compose import ComposeError, Outgoing, build, message_id_for, one_line, template_environment

JOB_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def outgoing(**changes: Any) -> Outgoing:
    values: dict[str, Any] = {
        "sender": "events@localhost", "recipient": "ada@example.com", "subject": "Welcome", "template": "welcome",
        "context": {"name": "Ada <b>", "email": "ada@example.com"}, "message_id": message_id_for(JOB_ID),
        "date": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    return Outgoing(**{**values, **changes})


def test_a_message_is_multipart_text_and_html_with_the_job_derived_message_id() -> None:
    message = build(template_environment(), outgoing())
    assert message["Message-ID"] == "<12345678-1234-5678-1234-567812345678@eventjobs>"
    assert (message["From"], message["To"], message["Subject"]) == ("events@localhost", "ada@example.com", "Welcome")
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    text, html = (part.get_content() for part in message.iter_parts())  # type: ignore[attr-defined]
    assert "Hello Ada <b>," in text
    assert "Hello Ada &lt;b&gt;," in html


@pytest.mark.parametrize("field", ["recipient", "subject", "sender"])
@pytest.mark.parametrize("injected", ["x\r\nBcc: all@example.com", "x\nBcc: all@example.com", "x\rBcc: y"])
def test_line_breaks_in_any_header_are_refused(field: str, injected: str) -> None:
    with pytest.raises(ComposeError, match="line break"):
        build(template_environment(), outgoing(**{field: injected}))


@pytest.mark.parametrize(("template", "context", "error"), [
    ("no_such_template", {}, "unknown email template"),
    ("welcome", {"name": "Ada"}, "email"),  # a missing variable is an error, never an empty string
])
def test_templates_that_cannot_render_are_refused(template: str, context: dict[str, Any], error: str) -> None:
    with pytest.raises(ComposeError, match=error):
        build(template_environment(), outgoing(template=template, context=context))


@pytest.mark.parametrize(("text", "expected"), [
    ("Tea\r\nBcc: x", "Tea Bcc: x"), ("  spaced   out\t", "spaced out"), ("plain", "plain"),
])
def test_domain_text_becomes_one_header_line(text: str, expected: str) -> None:
    assert one_line(text) == expected


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\t", "\x00", "\x7f", "\x9b"])
def test_any_control_character_or_line_separator_in_a_header_is_refused_for_good(char: str) -> None:
    with pytest.raises(ComposeError, match=f"U\\+{ord(char):04X}.*header injection"):
        build(template_environment(), outgoing(subject=f"Hello{char}Bcc: all@example.com"))


@pytest.mark.parametrize("value", ["Grüße aus Köln", "日本語の件名", "emoji 🎉", "a \u2013 b"])
def test_printable_unicode_is_a_fine_header(value: str) -> None:
    assert build(template_environment(), outgoing(subject=value))["Subject"] == value
