"""Named queries of the email worker: the `emails` audit and what the messages are about.

An `emails` row is keyed by an idempotency key; a row that reached `sent` is never claimed again,
which is what keeps a redelivered or rerun job from mailing twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from shared.db.jobs import Executor


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


async def claim(executor: Executor, email: NewEmail) -> asyncpg.Record | None:
    """Start an attempt at sending: the row (attempts counted), or None when this key was already sent.

    The Message-ID of an existing row is kept, so every attempt under one key looks the same to recipients.
    """
    return await executor.fetchrow(
        """INSERT INTO emails (id, job_id, idempotency_key, recipient, subject, template, message_id,
                               event_id, participant_id, attempts)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)
           ON CONFLICT (idempotency_key) DO UPDATE
                 SET attempts = emails.attempts + 1, job_id = EXCLUDED.job_id, status = 'queued',
                     updated_at = now()
               WHERE emails.status <> 'sent'
           RETURNING *""",
        uuid.uuid4(), email.job_id, email.idempotency_key, email.recipient, email.subject, email.template,
        email.message_id, email.event_id, email.participant_id,
    )


async def record_sent(executor: Executor, key: str, code: int | None, reply: str) -> None:
    await executor.execute(
        """UPDATE emails SET status = 'sent', smtp_code = $2, smtp_reply = $3, sent_at = now(), updated_at = now()
            WHERE idempotency_key = $1""",
        key, code, reply,
    )


async def record_failure(executor: Executor, key: str, code: int | None, reply: str, *, final: bool) -> None:
    """A failed attempt: `failed` when no attempt follows, else still `queued` with the last reply kept."""
    await executor.execute(
        """UPDATE emails SET status = $4, smtp_code = $2, smtp_reply = $3, updated_at = now()
            WHERE idempotency_key = $1 AND status <> 'sent'""",
        key, code, reply, "failed" if final else "queued",
    )


async def job_idempotency_key(executor: Executor, job_id: uuid.UUID) -> str | None:
    key: str | None = await executor.fetchval("SELECT idempotency_key FROM jobs WHERE id = $1", job_id)
    return key


async def get_participant(executor: Executor, participant_id: uuid.UUID) -> asyncpg.Record | None:
    return await executor.fetchrow("SELECT id, event_id, email, name FROM participants WHERE id = $1", participant_id)


async def participants_page(
    executor: Executor, event_id: uuid.UUID, after_email: str | None, limit: int
) -> list[asyncpg.Record]:
    """One page of an event's participants in email order (keyset on the (event_id, email) unique index)."""
    return await executor.fetch(
        """SELECT id, email, name FROM participants
            WHERE event_id = $1 AND ($2::text IS NULL OR email > $2)
            ORDER BY email
            LIMIT $3""",
        event_id, after_email, limit,
    )
