"""Look into a test vhost over AMQP: the parking lot's messages and reasons, a queue's live consumers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika

from shared.messaging.topology import dead_queue


@dataclass(frozen=True)
class DeadLetter:
    body: bytes
    headers: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.headers.get("x-reason", ""))


async def dead_letters(amqp_url: str) -> list[DeadLetter]:
    """Every message in jobs.dead; read with basic.get and nacked back, so the queue is left as it was."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(dead_queue(), ensure=False)
        letters = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            letters.append(DeadLetter(message.body, dict(message.headers)))
        # Closing the channel with the messages unacked puts them all back in their order.
        await channel.close()
        return letters
    finally:
        await connection.close()


async def _passive_declare(amqp_url: str, queue_name: str) -> tuple[int, int]:
    """(ready messages, consumers) live from a passive declare; the management API's figures lag by seconds."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        result = (await channel.declare_queue(queue_name, passive=True)).declaration_result
        assert result.message_count is not None and result.consumer_count is not None
        return result.message_count, result.consumer_count
    finally:
        await connection.close()


async def consumer_count(amqp_url: str, queue_name: str) -> int:
    return (await _passive_declare(amqp_url, queue_name))[1]


async def ready_count(amqp_url: str, queue_name: str) -> int:
    """Messages waiting in the queue, not yet delivered to any consumer."""
    return (await _passive_declare(amqp_url, queue_name))[0]
