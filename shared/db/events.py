"""Named queries on events and on the jobs that belong to them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from shared.db.cursor import Cursor
from shared.db.pool import Executor

# States of an event's job that has not run yet: what a move or a cancellation deletes.
PENDING_STATES = ("scheduled", "enqueued", "retrying")
EDITABLE_COLUMNS = frozenset({"title", "description", "location", "starts_at", "ends_at", "timezone"})


async def insert_event(
    executor: Executor, event_id: uuid.UUID, fields: Mapping[str, Any], *, idempotency_key: str | None,
    fingerprint: str | None,
) -> asyncpg.Record | None:
    """The new row, or None when the idempotency key belongs to an earlier event."""
    return await executor.fetchrow(
        """INSERT INTO events (id, title, description, location, starts_at, ends_at, idempotency_key,
                               request_fingerprint, timezone)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (idempotency_key) DO NOTHING
           RETURNING *""",
        event_id, fields["title"], fields.get("description"), fields.get("location"), fields["starts_at"],
        fields.get("ends_at"), idempotency_key, fingerprint, fields.get("timezone"),
    )


async def find_by_idempotency_key(executor: Executor, key: str) -> asyncpg.Record | None:
    return await executor.fetchrow("SELECT * FROM events WHERE idempotency_key = $1", key)


async def get_event(executor: Executor, event_id: uuid.UUID) -> asyncpg.Record | None:
    return await executor.fetchrow("SELECT * FROM events WHERE id = $1", event_id)


async def lock_event(connection: asyncpg.Connection, event_id: uuid.UUID) -> asyncpg.Record | None:
    """The row, locked until the transaction ends: concurrent edits of one event take turns."""
    return await connection.fetchrow("SELECT * FROM events WHERE id = $1 FOR UPDATE", event_id)


async def share_event(connection: asyncpg.Connection, event_id: uuid.UUID) -> asyncpg.Record | None:
    """The row, protected from a concurrent cancel while a participant registers."""
    return await connection.fetchrow("SELECT * FROM events WHERE id = $1 FOR SHARE", event_id)


async def list_events(
    executor: Executor, *, after: Cursor | None, limit: int
) -> list[asyncpg.Record]:
    """Events by start time (then id), the page after the keyset `after` (its `at` is a starts_at)."""
    if after is None:
        return await executor.fetch("SELECT * FROM events ORDER BY starts_at, id LIMIT $1", limit)
    return await executor.fetch(
        "SELECT * FROM events WHERE (starts_at, id) > ($1, $2) ORDER BY starts_at, id LIMIT $3",
        after.at, after.id, limit,
    )


async def update_event(
    connection: asyncpg.Connection, event_id: uuid.UUID, changes: Mapping[str, Any], *, reschedule: bool
) -> asyncpg.Record:
    columns = [name for name in changes if name in EDITABLE_COLUMNS]
    if len(columns) != len(changes):
        raise ValueError(f"not editable: {sorted(set(changes) - EDITABLE_COLUMNS)}")
    assignments = [f"{name} = ${index}" for index, name in enumerate(columns, start=2)]
    if reschedule:
        assignments.append("schedule_revision = schedule_revision + 1")
    row = await connection.fetchrow(
        f"UPDATE events SET {', '.join([*assignments, 'updated_at = now()'])} WHERE id = $1 RETURNING *",
        event_id, *(changes[name] for name in columns),
    )
    assert row is not None, "update_event needs the row locked by lock_event"
    return row


async def cancel_event(connection: asyncpg.Connection, event_id: uuid.UUID) -> asyncpg.Record:
    row = await connection.fetchrow(
        """UPDATE events SET cancelled_at = coalesce(cancelled_at, now()), updated_at = now()
            WHERE id = $1 RETURNING *""",
        event_id,
    )
    assert row is not None, "cancel_event needs the row locked by lock_event"
    return row


async def event_jobs(executor: Executor, event_ids: Sequence[uuid.UUID], kinds: Sequence[str]) -> list[asyncpg.Record]:
    """The not-deleted jobs of `kinds` (the event-schedule kinds) the events scheduled for themselves, in run order."""
    return await executor.fetch(
        """SELECT id, kind, state, run_at, (args ->> 'event_id')::uuid AS event_id FROM jobs
            WHERE args ? 'event_id' AND (args ->> 'event_id') = ANY($1::text[])
              AND kind = ANY($2::text[]) AND state <> 'deleted'
            ORDER BY run_at, kind""",
        [str(event_id) for event_id in event_ids], list(kinds),
    )


async def pending_event_jobs(
    connection: asyncpg.Connection, event_id: uuid.UUID, kinds: Sequence[str]
) -> list[uuid.UUID]:
    """The event's jobs of its current schedule that have not run: its jobs of `kinds` (the event-schedule
    kinds) and the per-participant sends they fanned out (those carry a schedule_revision; other mail about
    the event does not)."""
    rows = await connection.fetch(
        """SELECT id FROM jobs
            WHERE args ? 'event_id' AND (args ->> 'event_id') = $1
              AND (kind = ANY($2::text[]) OR (args ->> 'schedule_revision') IS NOT NULL)
              AND state = ANY($3::text[])
            ORDER BY id
            FOR UPDATE""",
        str(event_id), list(kinds), list(PENDING_STATES),
    )
    return [row["id"] for row in rows]
