"""The keyset cursor codec (shared/db/cursor.py): a token round-trips, and anything else is InvalidCursor."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from shared.db.cursor import Cursor, InvalidCursor


def test_a_cursor_round_trips_as_an_unpadded_url_safe_token() -> None:
    cursor = Cursor(datetime(2026, 3, 1, 12, 30, 0, 123456, tzinfo=UTC), uuid.uuid4())
    token = cursor.encode()
    assert "=" not in token and "+" not in token and "/" not in token
    assert Cursor.decode(token) == cursor


def test_a_padded_token_decodes_too() -> None:
    cursor = Cursor(datetime(2026, 3, 1, tzinfo=UTC), uuid.uuid4())
    padded = base64.urlsafe_b64encode(f"{cursor.at.isoformat()}|{cursor.id}".encode()).decode()
    assert Cursor.decode(padded) == cursor


@pytest.mark.parametrize("token", [
    "",
    "not base64 at all!",
    base64.urlsafe_b64encode(b"2026-03-01T00:00:00|" + str(uuid.uuid4()).encode()).decode(),  # naive time
    base64.urlsafe_b64encode(b"2026-03-01T00:00:00+00:00|not-a-uuid").decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
])
def test_anything_else_is_an_invalid_cursor(token: str) -> None:
    with pytest.raises(InvalidCursor):
        Cursor.decode(token)
