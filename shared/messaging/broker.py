"""The one RabbitMQ connection of a process: declares the topology, publishes with confirms."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from shared.messaging.envelope import Envelope
from shared.messaging.topology import (
    DEAD_EXCHANGE,
    JOBS_EXCHANGE,
    RETRY_EXCHANGE,
    Topology,
    delay_key,
)

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)


# Stamped on every parked copy, so one can be selected, aged and removed later (shared/parking_lot.py).
PARKED_ID_HEADER = "x-parked-id"
PARKED_AT_HEADER = "x-parked-at"  # Unix seconds


class BrokerUnavailable(ConnectionError):
    """The broker is disconnected or did not confirm in time; the outbox relay will publish later."""


@dataclass
class PublishedRows:
    """What publishing job rows came to: only the `confirmed` ones are on a queue."""

    confirmed: list[uuid.UUID] = field(default_factory=list)
    # No queue takes the row's service's messages yet: no process of that service ever declared its queue.
    unroutable: list[tuple[asyncpg.Record, aio_pika.exceptions.DeliveryError]] = field(default_factory=list)
    # The broker went away in this window; the rows of later windows were not tried.
    unavailable: list[tuple[asyncpg.Record, BrokerUnavailable]] = field(default_factory=list)


class Broker:
    def __init__(
        self, amqp_url: str, topology: Topology, *, publish_timeout: float = 5.0, heartbeat_seconds: int = 10,
        name: str | None = None,
    ) -> None:
        self.amqp_url = amqp_url
        self.heartbeat_seconds = heartbeat_seconds
        self.name = name
        self.topology = topology
        self.publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("broker is not connected")
        return self._connection

    @property
    def is_connected(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._connection.connected.is_set()
        )

    async def connect(self) -> None:
        # A short AMQP heartbeat: RabbitMQ drops a frozen process's connection within about two intervals
        # and gives its prefetched messages to another worker. The name shows in the management UI.
        self._connection = await aio_pika.connect_robust(
            self.amqp_url, reconnect_interval=1, heartbeat=self.heartbeat_seconds,
            name=self.name,
        )
        # on_return_raises: a message no queue would take is an error, never a silent drop.
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_topology(self._channel, self.topology)
        for name in (JOBS_EXCHANGE, RETRY_EXCHANGE, DEAD_EXCHANGE):
            self._exchanges[name] = await self._channel.get_exchange(name, ensure=False)
        self._connection.reconnect_callbacks.add(self._on_reconnect)

    async def _on_reconnect(self, *_: Any) -> None:
        log.info("reconnected to RabbitMQ; topology re-declared")
        if self._channel is not None and not self._channel.is_closed:
            await declare_topology(self._channel, self.topology)

    async def open_channel(self, prefetch: int) -> AbstractChannel:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            # Bounded: closing while the broker is unreachable must not keep a stopping process alive.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await connection.close()

    async def _publish(self, exchange: str, message: aio_pika.Message, routing_key: str) -> None:
        if not self.is_connected:
            raise BrokerUnavailable("not connected to RabbitMQ")
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self._exchanges[exchange].publish(message, routing_key, mandatory=True)
        except (TimeoutError, ConnectionError, aio_pika.exceptions.AMQPConnectionError,
                aio_pika.exceptions.ChannelInvalidStateError) as exc:
            raise BrokerUnavailable(f"publish to {exchange!r} not confirmed: {exc!r}") from exc

    async def publish_job(self, service: str, envelope: Envelope, priority: int) -> None:
        await self._publish(JOBS_EXCHANGE, job_message(envelope, priority), service)

    async def publish_rows(self, rows: Sequence[asyncpg.Record], *, window: int = 1) -> PublishedRows:
        """Publish job rows in order, `window` at a time (sent together by publish_jobs, their confirms awaited
        together), until a window meets a broker outage. The one publish loop of JobClient.publish and the outbox
        relay; what is not confirmed stays unpublished in the table. Any error but an outage or an unroutable row
        is raised."""
        result = PublishedRows()
        for start in range(0, len(rows), window):
            chunk = rows[start:start + window]
            outcomes = await self.publish_jobs(
                [(row["service"], Envelope.from_row(row), row["priority"]) for row in chunk])
            for row, outcome in zip(chunk, outcomes, strict=True):
                if outcome is None:
                    result.confirmed.append(row["id"])
                elif isinstance(outcome, BrokerUnavailable):
                    result.unavailable.append((row, outcome))
                elif isinstance(outcome, aio_pika.exceptions.DeliveryError):
                    result.unroutable.append((row, outcome))
                else:
                    raise outcome
            if result.unavailable:  # the broker is away: the rest would only time out one by one
                break
        return result

    async def publish_jobs(self, jobs: Sequence[tuple[str, Envelope, int]]) -> list[Exception | None]:
        """Publish many (service, envelope, priority) job messages at once; each one's outcome, None when
        confirmed, else BrokerUnavailable or a DeliveryError (unroutable, refused).

        Straight on the confirm channel's aiormq channel, without waiting for each frame to be written before
        the next is queued (aio-pika's publish holds the channel's lock until its frame is drained, one
        message per round of the event loop): all go out, then their confirms are awaited together, bounded
        by one publish timeout for the lot.
        """
        if not jobs:
            return []
        if not self.is_connected or self._channel is None:
            return [BrokerUnavailable("not connected to RabbitMQ")] * len(jobs)
        try:
            # The concrete channel: its basic_publish takes `wait`.
            channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        except (ConnectionError, aio_pika.exceptions.AMQPConnectionError,
                aio_pika.exceptions.ChannelInvalidStateError) as exc:
            return [BrokerUnavailable(f"publish not confirmed: {exc!r}")] * len(jobs)
        publishes = [asyncio.ensure_future(channel.basic_publish(
            envelope.encode(), exchange=JOBS_EXCHANGE, routing_key=service, mandatory=True, wait=False,
            properties=job_properties(envelope, priority))) for service, envelope, priority in jobs]
        _, pending = await asyncio.wait(publishes, timeout=self.publish_timeout)
        for publish in pending:
            publish.cancel()
        if pending:
            await asyncio.wait(pending)
        outcomes: list[Exception | None] = []
        for publish in publishes:
            error = None if publish.cancelled() else publish.exception()
            if publish.cancelled() or isinstance(error, (TimeoutError, ConnectionError, asyncio.CancelledError,
                                                         aio_pika.exceptions.AMQPConnectionError,
                                                         aio_pika.exceptions.ChannelInvalidStateError)):
                outcomes.append(BrokerUnavailable(f"publish not confirmed: {error!r}"))
            elif error is None or isinstance(error, Exception):
                outcomes.append(error)
            else:
                raise error
        return outcomes

    async def publish_retry(self, service: str, envelope: Envelope, priority: int, delay: int) -> None:
        message = job_message(envelope, priority, headers={"CC": [service]})
        await self._publish(RETRY_EXCHANGE, message, delay_key(delay))

    async def publish_dead(self, body: bytes, reason: str, headers: dict[str, Any] | None = None) -> None:
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={**(headers or {}), "x-reason": reason[:1000], PARKED_ID_HEADER: uuid.uuid4().hex,
                     PARKED_AT_HEADER: int(time.time())},
        )
        await self._publish(DEAD_EXCHANGE, message, "")


def job_properties(envelope: Envelope, priority: int) -> aiormq.spec.Basic.Properties:
    """The properties of `job_message`, built directly for `Broker.publish_jobs`."""
    return aiormq.spec.Basic.Properties(
        content_type="application/json", delivery_mode=int(aio_pika.DeliveryMode.PERSISTENT), priority=priority,
        message_id=str(envelope.job_id), message_type=envelope.kind, headers={},
    )


def job_message(envelope: Envelope, priority: int, headers: dict[str, Any] | None = None) -> aio_pika.Message:
    return aio_pika.Message(
        envelope.encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=priority,
        message_id=str(envelope.job_id),
        type=envelope.kind,
        headers=headers or {},
    )


async def declare_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Idempotent: re-declaring with the same arguments is a no-op on the broker."""
    for exchange in topology.exchanges:
        await channel.declare_exchange(exchange.name, aio_pika.ExchangeType(exchange.type), durable=True)
    for queue in topology.queues:
        declared = await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
        for exchange_name, routing_key in queue.bindings:
            await declared.bind(exchange_name, routing_key)
