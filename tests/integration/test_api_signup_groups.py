"""Concurrent sign-ups share one transaction (services/api/operations/signups.py), yet each gets its own answer."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from services.api.operations.signups import SIGNUPS
from tests.support.api_probe import platform_api, queue_depth, row_counts
from tests.support.environment import TestEnvironment
from tests.support.waiting import eventually


async def sign_up(api: TestClient[Any, Any], body: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with api.post("/api/users", json=body) as response:
        return response.status, await response.json()


async def test_concurrent_sign_ups_each_get_their_row_their_job_or_their_409(env: TestEnvironment) -> None:
    async with platform_api(env) as api:
        assert (await api.post("/api/users", json={"email": "taken@example.com", "name": "First"})).status == 201
        # 60 at once: 40 distinct new addresses, 10 sent twice in the same burst, and the address already taken
        bodies = [{"email": f"new{n}@example.com", "name": f"New {n}"} for n in range(40)]
        bodies += [{"email": f"twice{n}@example.com", "name": f"Twice {n} {copy}"} for n in range(10) for copy in "ab"]
        bodies += [{"email": "TAKEN@example.com", "name": "Again"}]
        writer = api.app[SIGNUPS]
        flushes = 0
        original = writer._write

        async def counted(sign_ups):  # type: ignore[no-untyped-def]
            nonlocal flushes
            flushes += 1
            return await original(sign_ups)

        writer._write = counted  # type: ignore[method-assign]
        results = await asyncio.gather(*(sign_up(api, body) for body in bodies))

    assert flushes < len(bodies)  # they did share transactions
    created = [body for status, body in results if status == 201]
    refused = [body for status, body in results if status == 409]
    assert (len(created), len(refused)) == (50, 11)
    assert Counter(str(user["email"]) for user in created) == Counter(
        [f"new{n}@example.com" for n in range(40)] + [f"twice{n}@example.com" for n in range(10)])
    assert all(body["error"]["details"] == [{"field": "email", "message": "is already registered"}]
               for body in refused)
    connection = await asyncpg.connect(env.database_url)
    try:
        # Publishes are stamped a moment after their confirm (shared/published_marks.py).
        await eventually(lambda: connection.fetchval(
            "SELECT count(*) = 0 FROM jobs WHERE kind = 'email.welcome' AND published_at IS NULL"),
            timeout=10, what="every welcome job's publish stamped")
        jobs = await connection.fetch(
            """SELECT j.id, j.args->>'email' AS email, j.published_at, u.email AS user_email
                 FROM jobs j LEFT JOIN users u ON u.email = j.args->>'email' WHERE j.kind = 'email.welcome'""")
    finally:
        await connection.close()
    by_id = {row["id"]: row for row in jobs}
    for user in created:  # each answer names its own job: the welcome of its own address, published
        job = by_id[uuid.UUID(str(user["welcome_job_id"]))]
        assert job["email"] == user["email"] == job["user_email"] and job["published_at"] is not None
    counts = await row_counts(env)
    assert (counts["users"], counts["jobs"]) == (51, 51)
    assert await queue_depth(env) == 51
