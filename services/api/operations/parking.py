"""The parking lot's purge (POST /api/queues/dead/purge and the Queues page's form): parked copies go, their
jobs are not changed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aio_pika

from services.api.http.errors import ApiError
from services.api.openapi.schemas import ParkedPurgeIn
from shared import parking_lot
from shared.runtime import Runtime

PURGE_TIMEOUT_SECONDS = 30.0


async def purge_parked(runtime: Runtime, purge: ParkedPurgeIn) -> int:
    """Remove parked copies: all, the selected ids, or those parked longer ago than the given seconds."""
    older_than = (None if purge.older_than_seconds is None
                  else datetime.now(UTC) - timedelta(seconds=purge.older_than_seconds))
    try:
        async with asyncio.timeout(PURGE_TIMEOUT_SECONDS):  # a reconnecting broker answers 503, not a hang
            return await parking_lot.purge(runtime.broker, every=bool(purge.all), ids=purge.ids or (),
                                           older_than=older_than, quorum=runtime.settings.queue_type == "quorum")
    except (RuntimeError, ConnectionError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise ApiError(503, "service_unavailable", "RabbitMQ is unavailable; try again shortly",
                       [{"dependency": "rabbitmq", "message": str(exc) or type(exc).__name__}],
                       headers={"Retry-After": "2"}) from None
