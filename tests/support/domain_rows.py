"""Events and participants written straight into Postgres, for worker tests that do not go through the API."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def insert_event(
    pool: asyncpg.Pool, *, starts_at: datetime, title: str = "Launch party", ends_at: datetime | None = None,
    location: str | None = "Main hall", cancelled_at: datetime | None = None, archived_at: datetime | None = None,
    created_at: datetime | None = None,
) -> uuid.UUID:
    event_id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO events (id, title, location, starts_at, ends_at, cancelled_at, archived_at, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, now()))""",
        event_id, title, location, starts_at, ends_at, cancelled_at, archived_at, created_at,
    )
    return event_id


async def insert_participants(
    pool: asyncpg.Pool, event_id: uuid.UUID, count: int, *, domain: str = "example.com",
    created_at: datetime | None = None,
) -> list[tuple[uuid.UUID, str]]:
    """`count` participants p0000@domain, p0001@domain, …: their ids and addresses."""
    rows = [(uuid.uuid4(), f"p{n:04d}@{domain}") for n in range(count)]
    await pool.executemany(
        """INSERT INTO participants (id, event_id, email, name, created_at)
           VALUES ($1, $2, $3, $4, coalesce($5, now()))""",
        [(pid, event_id, address, f"Participant {n}", created_at) for n, (pid, address) in enumerate(rows)],
    )
    return rows
