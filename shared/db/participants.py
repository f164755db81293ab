"""Named queries on participants."""

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
