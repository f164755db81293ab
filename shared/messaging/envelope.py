"""What travels on the wire for a job: a small JSON body. The job row in Postgres is the truth."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg


class PoisonMessage(ValueError):
    """A message no worker can act on; it goes to the parking lot with this reason."""


@dataclass(frozen=True)
class Envelope:
    job_id: uuid.UUID
    kind: str
    attempt: int = 0

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Envelope:
        """The message for a job row (any query's row with its id, kind and attempt)."""
        return cls(row["id"], row["kind"], row["attempt"])

    def encode(self) -> bytes:
        return json.dumps({"job_id": str(self.job_id), "kind": self.kind, "attempt": self.attempt}).encode()


# Bounds of what a worker accepts: a body is three short fields, and the attempt goes into an int4 column.
MAX_BODY_BYTES = 4096
MAX_ATTEMPT = 2**31 - 1


def decode(body: bytes) -> Envelope:
    """The envelope of a message body, or PoisonMessage naming what is wrong; never any other exception."""
    if len(body) > MAX_BODY_BYTES:
        raise PoisonMessage(f"message body of {len(body)} bytes is larger than {MAX_BODY_BYTES}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise PoisonMessage(f"undecodable message body: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise PoisonMessage("message body is not a JSON object")
    job_id, kind, attempt = data.get("job_id"), data.get("kind"), data.get("attempt", 0)
    if not isinstance(job_id, str):
        raise PoisonMessage("message job_id is not a string")
    try:
        parsed_id = uuid.UUID(job_id)
    except ValueError:
        raise PoisonMessage(f"message job_id {job_id[:100]!r} is not a UUID") from None
    if not isinstance(kind, str) or not kind:
        raise PoisonMessage("message kind is not a non-empty string")
    # bool is an int in Python; `true` is no attempt number.
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 0 <= attempt <= MAX_ATTEMPT:
        raise PoisonMessage(f"message attempt is not an integer from 0 to {MAX_ATTEMPT}")
    return Envelope(parsed_id, kind, attempt)
