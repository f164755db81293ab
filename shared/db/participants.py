"""Named queries on participants: registration (the API) and the reads of the email worker (one participant,
an event's count and its pages for a fan-out)."""

from __future__ import annotations

import uuid

import asyncpg

from shared.db.pool import Executor


async def insert_participant(
    executor: Executor, participant_id: uuid.UUID, event_id: uuid.UUID, email: str, name: str
) -> asyncpg.Record | None:
    """The new row, or None when the email is already registered for the event."""
    return await executor.fetchrow(
        """INSERT INTO participants (id, event_id, email, name) VALUES ($1, $2, $3, $4)
           ON CONFLICT (event_id, email) DO NOTHING
           RETURNING *""",
        participant_id, event_id, email, name,
    )


async def list_participants(executor: Executor, event_id: uuid.UUID) -> list[asyncpg.Record]:
    return await executor.fetch(
        "SELECT * FROM participants WHERE event_id = $1 ORDER BY created_at, id", event_id
    )


async def get_participant(executor: Executor, participant_id: uuid.UUID) -> asyncpg.Record | None:
    return await executor.fetchrow("SELECT id, event_id, email, name FROM participants WHERE id = $1", participant_id)


async def participant_count(executor: Executor, event_id: uuid.UUID) -> int:
    count: int = await executor.fetchval("SELECT count(*) FROM participants WHERE event_id = $1", event_id)
    return count


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
