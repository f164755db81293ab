"""The redaction rule as a table: which names are secret, what free text loses, what stays."""

from __future__ import annotations

from typing import Any

import pytest

from services.api.security.redaction import REDACTED, JobRedactor, redact, redact_text, secret_values


@pytest.mark.parametrize("name", ["password", "SMTP_Password", "passwd", "api_key", "apiKey", "api-key",
                                  "reset_token", "client_secret", "Authorization", "authorisation", "cookie",
                                  "Set-Cookie", "private_key", "credentials"])
def test_secret_looking_names_are_redacted(name: str) -> None:
    assert redact({name: "x", "to": "a@example.org"}) == {name: REDACTED, "to": "a@example.org"}


@pytest.mark.parametrize(("text", "shown"), [
    ("password=hunter2 user=ann", "password=[redacted] user=ann"),
    ('{"api_key": "k-1", "name": "Ann"}', '{"api_key": "[redacted]", "name": "Ann"}'),
    ("Authorization: Bearer abc.def", "Authorization: Bearer [redacted]"),
    ("Cookie: session=abc", "Cookie: [redacted]"),
    ("the secretary meets at 10", "the secretary meets at 10"),  # a name alone is not a pair
    ("failed with hunter2 again", "failed with [redacted] again"),  # a known secret value, wherever it is
])
def test_free_text_loses_secret_values_and_pairs(text: str, shown: str) -> None:
    assert redact_text(text, {"hunter2"}) == shown


def test_a_job_redactor_strikes_its_own_secret_values_from_results_errors_and_logs() -> None:
    args: dict[str, Any] = {"to": "a@example.org", "context": {"reset_token": "t-123", "n": 3}}
    assert secret_values(args) == {"t-123"}
    redactor = JobRedactor(args)
    row = redactor.row({"args": args, "result": {"echo": "sent t-123", "token": "t"}, "last_error": "bad t-123",
                        "last_traceback": None, "state_reason": "error"})
    assert row["args"]["context"] == {"reset_token": REDACTED, "n": 3}
    assert row["result"] == {"echo": f"sent {REDACTED}", "token": REDACTED}
    assert row["last_error"] == f"bad {REDACTED}"
