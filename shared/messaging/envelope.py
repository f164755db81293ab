"""What travels on the wire for a job: a small JSON body. The job row in Postgres is the truth."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass


class PoisonMessage(ValueError):
    """A message no worker can act on; it goes to the parking lot with this reason."""


@dataclass(frozen=True)
class Envelope:
    job_id: uuid.UUID
    kind: str
    attempt: int = 0

    def encode(self) -> bytes:
        return json.dumps({"job_id": str(self.job_id), "kind": self.kind, "attempt": self.attempt}).encode()


def decode(body: bytes) -> Envelope:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoisonMessage(f"undecodable message body: {exc}") from None
    if not isinstance(data, dict):
        raise PoisonMessage("message body is not a JSON object")
    try:
        job_id = uuid.UUID(str(data["job_id"]))
        kind = data["kind"]
        attempt = int(data.get("attempt", 0))
    except (KeyError, ValueError, TypeError) as exc:
        raise PoisonMessage(f"message body lacks a valid job_id, kind or attempt: {exc!r}") from None
    if not isinstance(kind, str) or not kind:
        raise PoisonMessage("message kind is not a non-empty string")
    return Envelope(job_id, kind, attempt)
