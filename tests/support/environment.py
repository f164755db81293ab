"""Throwaway Postgres databases and RabbitMQ vhosts for tests, removed afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg

from shared.db.migrate import migrate
from shared.settings import Settings

BASE_DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/eventjobs")
BASE_AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/")


# Tests send hundreds of sign-ups from one address; the rate-limit tests turn the limits back on.
NO_RATE_LIMITS = {"rate_limit_client_requests": 0, "rate_limit_email_requests": 0, "login_rate_limit_requests": 0}


def database_url(name: str) -> str:
    return urlunsplit(urlsplit(BASE_DATABASE_URL)._replace(path=f"/{name}"))


def amqp_url(vhost: str) -> str:
    return urlunsplit(urlsplit(BASE_AMQP_URL)._replace(path=f"/{quote(vhost, safe='')}"))


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(database_url("postgres"))


async def create_template_database() -> str:
    """A migrated database that each test clones: CREATE DATABASE … TEMPLATE is much faster than migrating."""
    name = f"eventjobs_tmpl_{uuid.uuid4().hex[:10]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await migrate(database_url(name))
    return name


async def clone_database(template: str) -> str:
    name = f"eventjobs_test_{uuid.uuid4().hex[:10]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    return name


async def drop_database(name: str) -> None:
    admin = await _admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class Management:
    """The RabbitMQ management HTTP API, for vhosts and queue inspection."""

    def __init__(self, base_url: str = MANAGEMENT_URL) -> None:
        parts = urlsplit(base_url)
        self.base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port or 15672}")).rstrip("/")
        credentials = aiohttp.encode_basic_auth(parts.username or "guest", parts.password or "guest")
        self.headers = {"Authorization": credentials}

    async def request(self, method: str, path: str, json: Any = None) -> Any:
        async with aiohttp.ClientSession(headers=self.headers) as session, session.request(
            method, f"{self.base}/api/{path}", json=json
        ) as response:
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")
            if response.content_type == "application/json":
                return await response.json()
            return None

    async def create_vhost(self, name: str) -> None:
        await self.request("PUT", f"vhosts/{quote(name, safe='')}", {})
        await self.request(
            "PUT", f"permissions/{quote(name, safe='')}/guest", {"configure": ".*", "write": ".*", "read": ".*"}
        )

    async def delete_vhost(self, name: str) -> None:
        await self.request("DELETE", f"vhosts/{quote(name, safe='')}")

    async def queue(self, vhost: str, queue: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"queues/{quote(vhost, safe='')}/{quote(queue, safe='')}")
        return result


@dataclass
class TestEnvironment:
    __test__ = False  # not a test class, whatever its name

    database: str
    vhost: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return database_url(self.database)

    @property
    def amqp_url(self) -> str:
        return amqp_url(self.vhost)

    def settings(self, **overrides: Any) -> Settings:
        values = {"database_url": self.database_url, "amqp_url": self.amqp_url,
                  "heartbeat_seconds": 1.0, "job_lease_seconds": 6.0, "shutdown_timeout_seconds": 5.0,
                  **NO_RATE_LIMITS,
                  **self.overrides, **overrides}
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def process_env(self, **overrides: Any) -> dict[str, str]:
        """Environment for a service started as a separate process."""
        settings = self.settings(**overrides)
        env = dict(os.environ)
        for name, value in settings.model_dump().items():
            if value is None:
                env.pop(name.upper(), None)
            elif isinstance(value, (list, tuple)):
                env[name.upper()] = ",".join(str(item) for item in value)
            else:
                env[name.upper()] = str(value)
        return env


@asynccontextmanager
async def test_environment(template: str, management: Management) -> AsyncIterator[TestEnvironment]:
    database = await clone_database(template)
    vhost = f"eventjobs_test_{uuid.uuid4().hex[:10]}"
    await management.create_vhost(vhost)
    try:
        yield TestEnvironment(database, vhost)
    finally:
        await management.delete_vhost(vhost)
        await drop_database(database)


test_environment.__test__ = False  # type: ignore[attr-defined]
