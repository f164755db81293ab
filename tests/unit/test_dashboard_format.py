"""The dashboard's pure parts as tables: redaction, durations, chart scale, filters, sessions, redirects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.api.dashboard.filters import parse_filter
from services.api.dashboard.formatting import REDACTED, chart, duration, nice_ceiling, redact, redact_payload
from services.api.dashboard.render import safe_next
from services.api.security.roles import Role
from services.api.security.sessions import read_session, sign_session
from shared.jobs import JobState

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        ({"to": "a@example.org", "password": "x"}, {"to": "a@example.org", "password": REDACTED}),
        ({"SMTP_Password": "x", "apiKey": "y", "api_key": "z"},
         {"SMTP_Password": REDACTED, "apiKey": REDACTED, "api_key": REDACTED}),
        ({"context": {"reset_token": "t", "name": "Ann"}}, {"context": {"reset_token": REDACTED, "name": "Ann"}}),
        ({"items": [{"client_secret": "s"}, "plain"]}, {"items": [{"client_secret": REDACTED}, "plain"]}),
        ({"authorization": "Bearer x", "subject": "secretary meeting"},
         {"authorization": REDACTED, "subject": "secretary meeting"}),  # values are never matched, only names
    ],
)
def test_secret_looking_argument_names_are_redacted_at_any_depth(args: dict[str, Any], shown: dict[str, Any]) -> None:
    assert redact(args) == shown


def test_a_parked_payload_is_redacted_when_it_is_json_and_shown_as_is_otherwise() -> None:
    assert "hunter2" not in redact_payload('{"args": {"password": "hunter2"}}')
    assert redact_payload("not json <b>") == "not json <b>"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0.0123, "12 ms"), (4.25, "4.2 s"), (60, "1 min"), (185, "3 min 5 s"), (7200, "2 h"),
     (7260, "2 h 1 min"), (3 * 86400 + 3600, "3 d 1 h")],
)
def test_durations_read_like_a_person_would_say_them(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(("peak", "top"), [(0, 2), (1, 2), (2, 2), (3, 3), (7, 8), (9, 10), (21, 30), (822, 1000)])
def test_the_chart_scale_rounds_the_peak_up_to_a_readable_number(peak: int, top: int) -> None:
    assert nice_ceiling(peak) == top


def test_chart_points_are_scaled_into_the_box_with_zero_at_the_bottom() -> None:
    start = NOW - timedelta(seconds=2)
    drawn = chart([(start, 0, 0), (start + timedelta(seconds=1), 4, 1), (NOW, 2, 0)], width=100, height=50)
    assert drawn.peak == 4
    assert drawn.succeeded == "0.0,50.0 50.0,0.0 100.0,25.0"
    assert drawn.failed == "0.0,50.0 50.0,37.5 100.0,50.0"
    assert drawn.succeeded_area.startswith("0,50 ") and drawn.succeeded_area.endswith(" 100.0,50")
    assert (drawn.total_succeeded, drawn.total_failed) == (6, 1)


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ({"state": "failed", "kind": "email.send", "q": "ann@example.org", "range": "24h"}, set()),
        ({"state": "exploded"}, {"state"}),
        ({"queue": "urgent"}, {"queue"}),
        ({"range": "1y"}, {"range"}),
        ({"since": "yesterday"}, {"since"}),
        ({"since": "2026-03-01T10:00", "until": "2026-03-01T09:00"}, {"until"}),
        ({"q": "a\x00b"}, {"q"}),
        ({"q": "x" * 201}, {"q"}),
    ],
)
def test_filter_form_values_are_checked_field_by_field(query: dict[str, str], errors: set[str]) -> None:
    assert set(parse_filter(query, NOW).errors) == errors


def test_a_filter_keeps_what_was_typed_and_applies_ranges_in_utc() -> None:
    parsed = parse_filter({"state": "failed", "range": "1h", "until": "2026-03-01T11:30"}, NOW)
    assert parsed.job_filter.state is JobState.FAILED
    assert parsed.job_filter.since == NOW - timedelta(hours=1)
    assert parsed.job_filter.until == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    assert parsed.query(cursor="abc") == "state=failed&range=1h&until=2026-03-01T11%3A30&cursor=abc"


@pytest.mark.parametrize(
    ("given", "kept"),
    [("/jobs/list?state=failed", "/jobs/list?state=failed"), ("https://evil.example/jobs", "/jobs"),
     ("//evil.example/jobs", "/jobs"), ("/jobs\\@evil.example", "/jobs"), ("/api/jobs", "/jobs"),
     ("/jobs/login?next=/jobs", "/jobs")],
)
def test_a_login_only_redirects_inside_the_dashboard(given: str, kept: str) -> None:
    assert safe_next(given) == kept


def test_a_session_cookie_is_only_accepted_unaltered_unexpired_and_from_the_same_key() -> None:
    key, other_key = b"k" * 32, b"o" * 32
    value = sign_session(key, Role.READ_ONLY, "fingerprint", expires=1000.0)
    assert read_session(key, value, now=999.0) == (Role.READ_ONLY, "fingerprint")
    assert read_session(key, value, now=1000.0) is None  # expired
    assert read_session(other_key, value, now=999.0) is None
    payload, _, signature = value.partition(".")
    forged = sign_session(other_key, Role.OPERATOR, "fingerprint", expires=1000.0).partition(".")[0]
    assert read_session(key, f"{forged}.{signature}", now=999.0) is None  # a role swapped in keeps no signature
    assert read_session(key, payload, now=999.0) is None
    assert read_session(key, "", now=0.0) is None
