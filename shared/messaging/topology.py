"""The RabbitMQ topology as data, and the names of its parts. Declared in one place (broker.py).

Retries: a failed attempt is published to the `jobs.retry` exchange with the delay as routing key
and the service's routing key in the CC header. The delay queue has a fixed `x-message-ttl`
because RabbitMQ expires messages only at a queue's head: one queue per delay length means a
15-minute retry never holds up a 1-minute one. On expiry the message is dead-lettered to `jobs`
with its original routing keys, CC included; only the service key is bound there.

Queue types (QUEUE_TYPE): `classic` queues live on one node and honour message priority
(x-max-priority). `quorum` queues are replicated across a RabbitMQ cluster (and run on a single node
too); in RabbitMQ 3.x they ignore message priority, so the queue classes no longer reorder work. They
bring at-least-once dead-lettering (a delayed retry is never dropped on its way back) and
x-delivery-limit, a second guard against a message that is redelivered forever.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.jobs import MAX_PRIORITY

JOBS_EXCHANGE = "jobs"
RETRY_EXCHANGE = "jobs.retry"
DEAD_EXCHANGE = "jobs.dead"
DEAD_QUEUE = "jobs.dead"


def work_queue(service: str) -> str:
    return f"jobs.{service}"


def delay_key(seconds: int) -> str:
    return f"{seconds}s"


def delay_queue(seconds: int) -> str:
    return f"jobs.delay.{seconds}s"


def dead_queue() -> str:
    return DEAD_QUEUE


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]

    def queue(self, name: str) -> Queue:
        return next(queue for queue in self.queues if queue.name == name)


# A message redelivered this often on a quorum queue is dead-lettered to the parking lot: a second poison
# guard beside the consumer's own. High, because outages and dropped connections redeliver too.
DELIVERY_LIMIT = 50


def queue_arguments(queue_type: str, **arguments: Any) -> dict[str, Any]:
    if queue_type == "classic":
        return arguments
    quorum = {key: value for key, value in arguments.items() if key != "x-max-priority"}
    quorum["x-queue-type"] = "quorum"
    if "x-dead-letter-exchange" in arguments:
        # At-least-once dead-lettering needs the queue to refuse publishes when full rather than drop its head.
        quorum |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    return quorum


def build_topology(services: Iterable[str], delays: Iterable[int], queue_type: str = "classic") -> Topology:
    exchanges = (
        Exchange(JOBS_EXCHANGE, "direct"),
        Exchange(RETRY_EXCHANGE, "direct"),
        Exchange(DEAD_EXCHANGE, "fanout"),
    )
    service_queues = tuple(
        Queue(
            work_queue(service),
            queue_arguments(queue_type, **{"x-max-priority": MAX_PRIORITY, "x-dead-letter-exchange": DEAD_EXCHANGE},
                            **({"x-delivery-limit": DELIVERY_LIMIT} if queue_type == "quorum" else {})),
            ((JOBS_EXCHANGE, service),),
        )
        for service in sorted(set(services))
    )
    delay_queues = tuple(
        Queue(
            delay_queue(seconds),
            queue_arguments(queue_type, **{"x-message-ttl": seconds * 1000, "x-dead-letter-exchange": JOBS_EXCHANGE}),
            ((RETRY_EXCHANGE, delay_key(seconds)),),
        )
        for seconds in sorted(set(delays))
    )
    dead = Queue(DEAD_QUEUE, queue_arguments(queue_type), ((DEAD_EXCHANGE, ""),))
    return Topology(exchanges, (*service_queues, *delay_queues, dead))
