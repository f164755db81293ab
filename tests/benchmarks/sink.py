"""The completion sink of the peers' tasks: one row per finished job, written by the task itself.

Ours writes its own history instead (three or four `job_states` rows per job, by trigger); the peers keep
nothing, so each of their no-op tasks inserts one row here, which is what a user of theirs who wanted to
know a job ran would add. Times are epoch seconds: `sent` and `due` from the producer, `started` from the
task, `done` from Postgres' clock (the same host's clock in every case).
"""

from __future__ import annotations

import os
import time
from typing import Any

SINK_TABLE = """CREATE TABLE IF NOT EXISTS bench_sink (
    n       integer NOT NULL,
    sent    float8,
    due     float8,
    started float8 NOT NULL,
    done    float8 NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
)"""

_connection: Any = None  # one autocommit connection per worker process (psycopg is not async here)


def record(n: int, sent: float | None, due: float | None) -> None:
    """Called by the peers' task bodies: one autocommit INSERT, as a plain task would do."""
    global _connection
    started = time.time()
    if _connection is None or _connection.closed:
        import psycopg  # the bench extra; imported here so tests.benchmarks imports without it

        _connection = psycopg.connect(os.environ["BENCH_DATABASE_URL"], autocommit=True)
    _connection.execute("INSERT INTO bench_sink (n, sent, due, started) VALUES (%s, %s, %s, %s)",
                        (n, sent, due, started))
