"""The `emails` send lease: a live lease is never claimed by a second run, an expired one is taken over,
`sent` is final, and a run that lost its lease cannot undo the other's outcome."""

from __future__ import annotations

import uuid

import asyncpg

from shared.db import emails


def new_email(job_id: uuid.UUID, key: str = "email.send:k1") -> emails.NewEmail:
    return emails.NewEmail(idempotency_key=key, job_id=job_id, recipient="a@example.com", subject="Hi",
                           template="plain", message_id=f"<{job_id}@eventjobs>")


async def test_a_live_lease_keeps_a_second_run_out_until_it_expires(db: asyncpg.Connection) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    await db.execute("INSERT INTO jobs (id, kind, queue, service, priority, state, max_attempts) "
                     "SELECT unnest($1::uuid[]), 'email.send', 'default', 'email', 5, 'processing', 3",
                     [first, second])
    row = await emails.claim(db, new_email(first), owner="run-1", lease_seconds=30)
    assert row is not None and row["status"] == "sending" and row["lease_owner"] == "run-1"

    assert await emails.claim(db, new_email(second), owner="run-2", lease_seconds=30) is None
    lease = await emails.lease_of(db, "email.send:k1")
    assert lease is not None and lease.status == "sending" and lease.owner == "run-1" and 25 < lease.seconds_left <= 30

    await db.execute("UPDATE emails SET lease_expires_at = now() - interval '1 second'")  # run-1 died
    taken = await emails.claim(db, new_email(second), owner="run-2", lease_seconds=30)
    assert taken is not None and taken["lease_owner"] == "run-2" and taken["attempts"] == 2
    assert taken["message_id"] == row["message_id"]  # every copy carries the first Message-ID

    await emails.record_failure(db, "email.send:k1", "run-1", 451, "late", final=False)  # not its lease any more
    still = await emails.lease_of(db, "email.send:k1")
    assert still is not None and (still.status, still.owner) == ("sending", "run-2")
    await emails.record_sent(db, "email.send:k1", 250, "OK")
    assert await emails.claim(db, new_email(first), owner="run-3", lease_seconds=30) is None
    final = await db.fetchrow("SELECT status, smtp_code, lease_expires_at FROM emails")
    assert tuple(final) == ("sent", 250, None)
