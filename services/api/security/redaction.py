"""The one redaction rule: names that look secret, and what they hold, are shown as `[redacted]`.

Applied to job arguments and results (any depth), to error text, tracebacks, state reasons and log lines
(the job's own secret values wherever they reappear, and `name=value` / `"name": "value"` pairs whose
name looks secret), and to search: 0006_redaction.sql holds the same patterns for the SQL that a
read-only caller's search runs (tests/unit/test_redaction.py checks that both spell them alike).

Who sees what: the dashboard always redacts; the JSON API redacts for read-only callers (the read-only
token, or everyone under DASHBOARD_READ_ONLY); operators get raw values from the JSON API only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

Row = Mapping[str, Any] | asyncpg.Record

REDACTED = "[redacted]"
# Names that usually hold a credential; matched anywhere in the key, case-insensitively. The same
# pattern is in 0006_redaction.sql (`secret_name_pattern()`): POSIX ARE and Python read it alike.
SECRET_NAME_PATTERN = (r"pass(word|wd|phrase)?|token|secret|api[_-]?key|credential|authori[sz]ation"
                       r"|private[_-]?key|cookie")
SECRET_NAME = re.compile(SECRET_NAME_PATTERN, re.IGNORECASE)
# `password=hunter2`, `"api_key": "k"`, `Authorization: Bearer t` in free text: the value goes, the name stays.
# Also in 0006_redaction.sql (`secret_pair_pattern()`).
SECRET_PAIR_PATTERN = (r"((pass(word|wd|phrase)?|token|secret|api[_-]?key|credential|authori[sz]ation"
                       r"|private[_-]?key|cookie)[a-z0-9_-]*[\"']?[ \t]*[:=][ \t]*[\"']?((bearer|basic)[ \t]+)?)"
                       r"[^][ \t\r\n\"',;&()<>{}]+")
SECRET_PAIR = re.compile(SECRET_PAIR_PATTERN, re.IGNORECASE)
MIN_SECRET_LENGTH = 1


def is_secret_name(name: object) -> bool:
    return bool(SECRET_NAME.search(str(name)))


def redact(value: Any) -> Any:
    """`value` with every entry whose key looks secret replaced, however deep it is nested."""
    if isinstance(value, Mapping):
        return {key: REDACTED if is_secret_name(key) else redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def secret_values(value: Any, inside_secret: bool = False) -> set[str]:
    """The scalar values held under secret-looking names, as text, so they can be struck from free text."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        for key, item in value.items():
            found |= secret_values(item, inside_secret or is_secret_name(key))
    elif isinstance(value, list):
        for item in value:
            found |= secret_values(item, inside_secret)
    elif inside_secret and value is not None and not isinstance(value, bool):
        text = str(value)
        if len(text) >= MIN_SECRET_LENGTH:
            found.add(text)
    return found


def redact_text(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """Free text (an error, a traceback, a log line) with known secret values and secret-looking pairs struck."""
    if not text:
        return text
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: a secret containing another
        text = text.replace(secret, REDACTED)
    return SECRET_PAIR.sub(lambda match: match.group(1) + REDACTED, text)


def redact_payload(text: str) -> str:
    """A raw message body shown with its secret-looking fields redacted when it is JSON."""
    try:
        return json.dumps(redact(json.loads(text)), ensure_ascii=False, sort_keys=True)
    except ValueError:
        return redact_text(text) or text


class JobRedactor:
    """Everything shown about one job, redacted with the secrets of its own arguments in mind."""

    def __init__(self, args: Any) -> None:
        self.secrets = secret_values(args)

    def text(self, text: str | None) -> str | None:
        return redact_text(text, self.secrets)

    def value(self, value: Any) -> Any:
        """A structure (a result): secret names redacted, and secret values struck from its strings."""
        if isinstance(value, Mapping):
            return {key: REDACTED if is_secret_name(key) else self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def row(self, row: Row) -> dict[str, Any]:
        """A jobs row (or job_states / job_logs row) as a dict with every shown field redacted."""
        shown = dict(row.items())
        if "args" in shown:
            shown["args"] = redact(shown["args"])
        if shown.get("result") is not None:
            shown["result"] = self.value(shown["result"])
        for name in ("last_error", "last_traceback", "state_reason", "error", "traceback", "reason", "message",
                     "progress_message"):
            if isinstance(shown.get(name), str):
                shown[name] = self.text(shown[name])
        return shown


def redact_job(row: Row) -> dict[str, Any]:
    return JobRedactor(row["args"]).row(row)
