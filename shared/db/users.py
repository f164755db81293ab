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


async def insert_users(
    executor: Executor, users: list[tuple[uuid.UUID, str, str]]
) -> dict[uuid.UUID, asyncpg.Record]:
    """Many sign-ups in one statement: the rows written, by id. A taken email (by an existing user, or by an
    earlier item of the same list) writes nothing for that item."""
    rows = await executor.fetch(
        """INSERT INTO users (id, email, name)
           SELECT u.id, u.email, u.name
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[]) AS u(id, email, name, ordinal)
            ORDER BY u.ordinal  -- of two items with one email, the first is written
           ON CONFLICT (email) DO NOTHING
           RETURNING *""",
        [user[0] for user in users], [user[1] for user in users], [user[2] for user in users],
        list(range(len(users))),
    )
    return {row["id"]: row for row in rows}
