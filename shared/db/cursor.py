"""The one codec of keyset-pagination cursors: where a page ended, as an opaque URL-safe token.

A page ordered by (some timestamp, id) ends at its last row; the next page starts strictly after that pair.
The token is the pair in base64url, without padding (a padded token decodes too).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime


class InvalidCursor(ValueError):
    """A pagination cursor that this codec did not produce."""


@dataclass(frozen=True)
class Cursor:
    """The (timestamp, id) of a page's last row: `at` is the value of the column the page is ordered by."""

    at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            stamp, _, row_id = raw.partition("|")
            at = datetime.fromisoformat(stamp)
            if at.tzinfo is None:
                raise ValueError("naive timestamp")
            return cls(at, uuid.UUID(row_id))
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise InvalidCursor(f"not a cursor from this api: {token!r}") from exc
