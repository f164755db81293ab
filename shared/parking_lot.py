"""The parking lot (`jobs.dead`) kept true: copies of jobs that moved on are removed, operators purge.

RabbitMQ cannot delete one message from the middle of a queue, so a sweep takes every parked message
with basic.get (unacked, so nothing else sees them meanwhile), acks the ones to remove, and returns the
rest: on a classic queue with a reject-requeue (they go back in their places); on a quorum queue a
returned message counts as a delivery and the queue drops it past its delivery limit, so the rest are
published again, in order, with publisher confirms, and only then acked. A copy is identified by the `x-parked-id`
header the broker writes when it parks it (older copies by a hash of body and reason).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from shared.messaging.broker import PARKED_AT_HEADER as PARKED_AT
from shared.messaging.broker import PARKED_ID_HEADER as PARKED_ID
from shared.messaging.broker import Broker
from shared.messaging.topology import DEAD_EXCHANGE, DEAD_QUEUE

log = logging.getLogger(__name__)

SWEEP_LIMIT = 100_000  # parked messages held at once by one sweep
# Once a parked copy's job is in one of these states, the copy says nothing true any more.
SETTLED_STATES = ("succeeded", "deleted")


@dataclass(frozen=True)
class ParkedCopy:
    id: str
    job_id: uuid.UUID | None
    parked_at: datetime | None  # None: parked before copies were stamped
    reason: str | None


def parked_id(headers: dict[str, Any], body: bytes) -> str:
    stamped = headers.get(PARKED_ID)
    if isinstance(stamped, str) and stamped:
        return stamped
    reason = str(headers.get("x-reason") or "")
    return hashlib.sha256(body + b"\x00" + reason.encode()).hexdigest()[:32]


def parked_at(headers: dict[str, Any]) -> datetime | None:
    stamp = headers.get(PARKED_AT)
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        return datetime.fromtimestamp(stamp, UTC)
    return None


def job_id_of(body: bytes) -> uuid.UUID | None:
    try:
        data = json.loads(body)
        return uuid.UUID(data["job_id"]) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def copy_of(message: AbstractIncomingMessage) -> ParkedCopy:
    headers = dict(message.headers or {})
    reason = headers.get("x-reason")
    return ParkedCopy(parked_id(headers, message.body), job_id_of(message.body), parked_at(headers),
                      reason if isinstance(reason, str) else None)


async def sweep(broker: Broker, remove: Callable[[list[ParkedCopy]], Collection[str]], *,
                quorum: bool = False) -> int:
    """Remove the parked copies whose ids `remove` returns (it sees every copy at once); the count removed.
    `quorum`: the parking lot is a quorum queue (QUEUE_TYPE=quorum), so kept copies are republished."""
    channel = await broker.connection.channel(publisher_confirms=True)
    try:
        queue = await channel.get_queue(DEAD_QUEUE, ensure=False)
        exchange = await channel.get_exchange(DEAD_EXCHANGE, ensure=False)
        held: list[tuple[AbstractIncomingMessage, ParkedCopy]] = []
        while len(held) < SWEEP_LIMIT:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            held.append((message, copy_of(message)))
        doomed = set(remove([copy for _, copy in held])) if held else set()
        removed = 0
        for message, copy in held:
            if copy.id in doomed:
                await message.ack()
                removed += 1
            elif quorum:
                # The same body and headers (its x-parked-id and x-parked-at too); confirmed before the ack,
                # so a crash in between leaves two copies, never none.
                await exchange.publish(aio_pika.Message(message.body, headers=dict(message.headers or {}),
                                                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT), "")
                await message.ack()
            else:
                await message.reject(requeue=True)
        if removed:
            log.info("parked copies removed", extra={"removed": removed, "kept": len(held) - removed})
        return removed
    finally:
        # Anything still unacked (an error above) goes back to the queue when the channel closes.
        await channel.close()


async def forget_jobs(broker: Broker, job_ids: Iterable[uuid.UUID], *, quorum: bool = False) -> int:
    """Remove the parked copies of these jobs (requeued or deleted: their copies are stale)."""
    wanted = set(job_ids)
    if not wanted or not await parked_count(broker):
        return 0
    return await sweep(broker, lambda copies: [copy.id for copy in copies if copy.job_id in wanted], quorum=quorum)


async def forget_settled(broker: Broker, pool: asyncpg.Pool, *, quorum: bool = False) -> int:
    """Remove the parked copies whose jobs have since succeeded or been deleted."""
    if not await parked_count(broker):
        return 0
    held: list[ParkedCopy] = []

    def collect(copies: list[ParkedCopy]) -> list[str]:
        held.extend(copies)
        return []

    # Two passes: the states are read between them (a sweep's decision cannot await).
    await sweep(broker, collect, quorum=quorum)
    ids = list({copy.job_id for copy in held if copy.job_id is not None})
    if not ids:
        return 0
    rows = await pool.fetch("SELECT id FROM jobs WHERE id = ANY($1::uuid[]) AND state = ANY($2::text[])",
                            ids, list(SETTLED_STATES))
    settled = {row["id"] for row in rows}
    return await forget_jobs(broker, settled, quorum=quorum)


async def parked_count(broker: Broker) -> int:
    channel = await broker.connection.channel()
    try:
        queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def purge(broker: Broker, *, every: bool = False, ids: Collection[str] = (),
                older_than: datetime | None = None, quorum: bool = False) -> int:
    """An operator's purge: everything, the selected copies, or those parked before `older_than`
    (copies parked before they were stamped with a time count as old)."""
    if every:
        channel = await broker.connection.channel()
        try:
            queue = await channel.get_queue(DEAD_QUEUE, ensure=False)
            return await _purge_all(queue)
        finally:
            await channel.close()
    chosen = set(ids)

    def pick(copies: list[ParkedCopy]) -> list[str]:
        return [copy.id for copy in copies
                if copy.id in chosen or (older_than is not None and (copy.parked_at is None
                                                                      or copy.parked_at < older_than))]

    return await sweep(broker, pick, quorum=quorum)


async def _purge_all(queue: aio_pika.abc.AbstractQueue) -> int:
    result = await queue.purge()
    return int(getattr(result, "message_count", 0) or 0)
