"""Read what sits in a vhost's parking lot `jobs.dead`, with the reason each message carries."""

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
