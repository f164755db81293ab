"""Apply the numbered SQL migrations in order, in one transaction, under an advisory lock.

Safe to run from every service at start: the lock serialises concurrent runs and applied
versions are skipped. Creates the database itself when it does not exist yet.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.logs import configure_logging
from shared.settings import load_settings

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x6576_6A6F  # "evjo": any constant all services agree on
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("shared.db.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return found


async def ensure_database(database_url: str) -> None:
    try:
        connection = await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        parts = urlsplit(database_url)
        name = parts.path.lstrip("/")
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            log.info("created database %s", name)
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            pass  # another service created it a moment ago
        finally:
            await admin.close()
    else:
        await connection.close()


async def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    await ensure_database(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await connection.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            applied = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
            done = []
            for migration in load_migrations():
                if migration.version in applied:
                    continue
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version, migration.name,
                )
                done.append(migration.name)
            return done
    finally:
        await connection.close()


def main() -> None:
    settings = load_settings()
    configure_logging("migrate", settings.log_level)
    applied = asyncio.run(migrate(settings.database_url))
    log.info("migrations applied", extra={"applied": applied})


if __name__ == "__main__":
    main()
