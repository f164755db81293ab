"""Named queries on users."""

from __future__ import annotations

import uuid

import asyncpg

from shared.db.pool import Executor


async def insert_user(executor: Executor, user_id: uuid.UUID, email: str, name: str) -> asyncpg.Record | None:
    """The new row, or None when the email is taken."""
    return await executor.fetchrow(
        """INSERT INTO users (id, email, name) VALUES ($1, $2, $3)
           ON CONFLICT (email) DO NOTHING
           RETURNING *""",
        user_id, email, name,
    )
