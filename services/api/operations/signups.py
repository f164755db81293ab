"""Sign-ups that arrive together share one transaction: one commit, confirms awaited together, one published_at
stamp a moment later (shared/published_marks.py); shared/batching.py: the first sign-up is written at once,
those arriving meanwhile go in the next.

Each sign-up still gets its own answer: its user row and welcome job, or None when its email is taken (by an
existing user, or by an earlier sign-up of the same group). The rows and their welcome jobs commit together,
the jobs are published with confirms after that commit, and only then is any sign-up of the group answered:
what one sign-up alone promised, each still gets. Should Postgres (or the job kind's validation)
refuse the group, each sign-up is written on its own, so one bad value never fails the others; a lost connection
fails the group, as it would have failed each alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from services.api.http.app_keys import RUNTIME
from shared.batching import Batcher
from shared.client import BatchRefused, EnqueuedJob
from shared.db import users as user_queries
from shared.db.pool import acquire
from shared.kinds import EMAIL_WELCOME
from shared.runtime import Runtime

WELCOME = EMAIL_WELCOME.name


@dataclass(frozen=True)
class SignUp:
    id: uuid.UUID
    email: str
    name: str


@dataclass(frozen=True)
class SignedUp:
    user: asyncpg.Record
    job: EnqueuedJob


Outcome = SignedUp | None | Exception


class SignupWriter:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._batcher: Batcher[SignUp, Outcome] = Batcher(self._flush)

    async def sign_up(self, email: str, name: str) -> SignedUp | None:
        """Write the user and its welcome job, publish the job; None when the email is taken."""
        outcome = await self._batcher.submit(SignUp(uuid.uuid4(), email, name))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _flush(self, sign_ups: list[SignUp]) -> list[Outcome]:
        try:
            return list(await self._write(sign_ups))
        except (asyncpg.PostgresError, BatchRefused):
            if len(sign_ups) == 1:
                raise
        outcomes: list[Outcome] = []
        for sign_up in sign_ups:  # one refused value must not fail the others: each on its own
            try:
                outcomes.extend(await self._write([sign_up]))
            except (asyncpg.PostgresError, BatchRefused) as error:
                outcomes.append(error)
        return outcomes

    async def _write(self, sign_ups: list[SignUp]) -> list[SignedUp | None]:
        client = self.runtime.client
        async with acquire(self.runtime.pool) as connection, client.transaction(connection):
            written = await user_queries.insert_users(
                connection, [(sign_up.id, sign_up.email, sign_up.name) for sign_up in sign_ups])
            fresh = [written[sign_up.id] for sign_up in sign_ups if sign_up.id in written]
            jobs = await client.enqueue_many([(WELCOME, {"email": row["email"], "name": row["name"]})
                                              for row in fresh], connection=connection)
        job_of = {row["id"]: job for row, job in zip(fresh, jobs, strict=True)}
        return [SignedUp(written[sign_up.id], job_of[sign_up.id]) if sign_up.id in written else None
                for sign_up in sign_ups]


SIGNUPS = web.AppKey("signup_writer", SignupWriter)


def install(app: web.Application) -> None:
    """After the runtime is open (cleanup_ctx runs before on_startup handlers)."""

    async def start(app: web.Application) -> None:
        app[SIGNUPS] = SignupWriter(app[RUNTIME])

    app.on_startup.append(start)
