"""Named queries on `emails`: the audit row of every message the email worker sends or tries to send.

An `emails` row is keyed by an idempotency key; a row that reached `sent` is never claimed again,
which is what keeps a redelivered or rerun job from mailing twice, and a row `sending` under a live
lease is not claimed either, so two runs never hold the same email's SMTP conversation at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from shared.db.pool import Executor


@dataclass(frozen=True)
class NewEmail:
    idempotency_key: str
    job_id: uuid.UUID
    recipient: str
    subject: str
    template: str
    message_id: str
    event_id: uuid.UUID | None = None
    participant_id: uuid.UUID | None = None


async def claim(executor: Executor, email: NewEmail, *, owner: str, lease_seconds: float) -> asyncpg.Record | None:
    """Take the send lease: the row, now `sending` under `owner` until now + lease_seconds (attempts counted),
    or None when the key was already sent or another run holds a live lease (see `lease_of`).

    The Message-ID of an existing row is kept, so every copy of one email looks the same to recipients.
    """
    return await executor.fetchrow(
        """INSERT INTO emails (id, job_id, idempotency_key, recipient, subject, template, message_id,
                               event_id, participant_id, attempts, status, lease_owner, lease_expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, 'sending', $10, now() + make_interval(secs => $11))
           ON CONFLICT (idempotency_key) DO UPDATE
                 SET attempts = emails.attempts + 1, job_id = EXCLUDED.job_id, status = 'sending',
                     lease_owner = EXCLUDED.lease_owner, lease_expires_at = EXCLUDED.lease_expires_at,
                     updated_at = now()
               WHERE emails.status <> 'sent'
                 AND NOT (emails.status = 'sending' AND emails.lease_expires_at > now())
           RETURNING *""",
        uuid.uuid4(), email.job_id, email.idempotency_key, email.recipient, email.subject, email.template,
        email.message_id, email.event_id, email.participant_id, owner, lease_seconds,
    )


@dataclass(frozen=True)
class Lease:
    status: str
    owner: str | None
    seconds_left: float  # until the lease expires (<= 0: expired, or none)


async def lease_of(executor: Executor, key: str) -> Lease | None:
    row = await executor.fetchrow(
        """SELECT status, lease_owner,
                  coalesce(extract(epoch FROM lease_expires_at - now()), 0)::float8 AS seconds_left
             FROM emails WHERE idempotency_key = $1""",
        key,
    )
    return Lease(row["status"], row["lease_owner"], row["seconds_left"]) if row is not None else None


async def record_sent(executor: Executor, key: str, code: int | None, reply: str) -> None:
    """Committed on its own right after the server's 250: from here on no run sends this key again."""
    await executor.execute(
        """UPDATE emails SET status = 'sent', smtp_code = $2, smtp_reply = $3, sent_at = now(), updated_at = now(),
                             lease_expires_at = NULL
            WHERE idempotency_key = $1 AND status <> 'sent'""",
        key, code, reply,
    )


async def record_failure(
    executor: Executor, key: str, owner: str, code: int | None, reply: str, *, final: bool
) -> None:
    """A failed attempt gives its lease back: `failed` when no attempt follows, else `queued` with the reply kept.
    Only the lease's owner does this, so a run whose lease was taken over cannot undo the other's work."""
    await executor.execute(
        """UPDATE emails SET status = $5, smtp_code = $3, smtp_reply = $4, updated_at = now(), lease_expires_at = NULL
            WHERE idempotency_key = $1 AND lease_owner = $2 AND status = 'sending'""",
        key, owner, code, reply, "failed" if final else "queued",
    )
