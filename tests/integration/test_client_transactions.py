"""JobClient.transaction publishes what its own transaction enqueued, after commit, and nothing else."""

from __future__ import annotations

import aio_pika

from shared.messaging.topology import work_queue
from shared.runtime import Runtime
from tests.support.environment import TestEnvironment
from tests.support.kinds import TEST_SERVICE


async def waiting_message_ids(env: TestEnvironment) -> list[str]:
    """The ids of the messages in the test service's queue (taken off it; no worker runs here)."""
    connection = await aio_pika.connect(env.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(work_queue(TEST_SERVICE), passive=True)
        ids = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            ids.append(str(message.message_id))
        return ids


async def test_a_rolled_back_plain_transaction_leaves_nothing_for_a_later_one_to_publish(
    env: TestEnvironment, runtime: Runtime
) -> None:
    async with runtime.pool.acquire() as connection:
        plain = connection.transaction()
        await plain.start()
        discarded = await runtime.client.enqueue("test.noop", {"n": 1}, connection=connection)  # type: ignore[arg-type]
        await plain.rollback()
        assert discarded is not None
        # The same connection, later, in a publishing transaction of its own.
        async with runtime.client.transaction(connection):  # type: ignore[arg-type]
            kept = await runtime.client.enqueue("test.noop", {"n": 2}, connection=connection)  # type: ignore[arg-type]
        assert kept is not None

    assert await runtime.pool.fetchval("SELECT count(*) FROM jobs WHERE id = $1", discarded.id) == 0
    assert await waiting_message_ids(env) == [str(kept.id)]
