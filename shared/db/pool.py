"""The asyncpg pool of a process, with JSON codecs so jsonb columns arrive as Python objects, and `Executor`:
what every named query in shared.db runs on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

# A named query runs on the pool (one statement, autocommit) or on a connection (inside the caller's transaction).
Executor = asyncpg.Connection | asyncpg.Pool

# Our transactions last milliseconds; one idle this long belongs to a process that stopped.
IDLE_IN_TRANSACTION_MS = 30_000


async def init_connection(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def keep_session(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL).

    That query is one more round trip on every release, a tenth of the worker's busy time in a profile, and
    resets state no pooled connection here has: nothing sets session variables, listens (the scheduler's
    LISTEN has a connection of its own), keeps cursors past its transaction or takes session advisory locks
    (the migration lock is transaction-scoped). asyncpg still rolls back a transaction left open and drops
    listeners before calling this.
    """


async def create_pool(database_url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        database_url, min_size=min_size, max_size=max_size, init=init_connection, timeout=10, reset=keep_session,
        # A process frozen inside a transaction (SIGSTOP, a paused VM) must not hold its row locks forever:
        # Postgres ends such a session, and the rows it locked go to the other replicas.
        server_settings={"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)},
    )
    return pool


@asynccontextmanager
async def open_pool(database_url: str, **kwargs: Any) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, **kwargs)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection typed as the Connection the named queries take (the proxy forwards every method)."""
    async with pool.acquire() as proxy:
        yield cast(asyncpg.Connection, proxy)
