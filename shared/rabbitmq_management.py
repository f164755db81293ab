"""What RabbitMQ says about our queues, via its management HTTP API: depth, consumers, rates, parked messages.

Used by the api (the Queues page, GET /api/queues, /metrics) and by the operator's command line (`eventjobs
status`, `eventjobs parking-lot list`). `management_ui_url` is the one place the management server's address is
built from RABBITMQ_MANAGEMENT_URL: the dashboard's link, the API's `management_url` and this client all use it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from shared import parking_lot
from shared.messaging.topology import DEAD_QUEUE, JOBS_EXCHANGE
from shared.settings import Settings

TIMEOUT = aiohttp.ClientTimeout(total=5)
DEFAULT_PORT = 15672  # the management plugin's own port, when the URL names none


class ManagementUnavailable(RuntimeError):
    """The management API did not answer, or refused us; the queues page says so instead of failing."""


class QueueFigures(BaseModel):
    """One queue's figures, as GET /api/queues shows them (the api's QueueOut is this model)."""

    name: str
    role: str = Field(description="work, delay or dead")
    messages: int
    ready: int
    unacknowledged: int
    consumers: int
    publish_rate: float
    deliver_rate: float
    ack_rate: float


class QueueInfo(QueueFigures):
    """One queue as the management API reports it: what GET /api/queues shows (rates are messages per second
    as the management API averages them; role is work, delay, dead or other), plus its arguments."""

    model_config = ConfigDict(frozen=True)

    arguments: dict[str, Any]


@dataclass(frozen=True)
class ParkedMessage:
    reason: str | None  # the x-reason header the consumer wrote when it parked the message
    job_id: str | None
    kind: str | None
    service: str | None
    payload: str
    headers: dict[str, Any]
    id: str = ""  # what a purge of selected copies names (shared/parking_lot.py)
    parked_at: datetime | None = None


def management_ui_url(url: str) -> str:
    """The management server's address (its web UI) from RABBITMQ_MANAGEMENT_URL, without the credentials.

    An IPv6 host keeps its brackets, the port is the URL's or 15672, and a path (a management plugin behind a
    path prefix, or a proxy) is kept, ending in `/`; the HTTP API is `api/` under it.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"[{host}]:{parts.port or DEFAULT_PORT}" if ":" in host else f"{host}:{parts.port or DEFAULT_PORT}"
    path = parts.path if parts.path.endswith("/") else f"{parts.path}/"
    return urlunsplit((parts.scheme or "http", netloc, path, "", ""))


def vhost_of(amqp_url: str) -> str:
    """The virtual host of an AMQP URL: its path, unquoted; an empty path is the default vhost `/`."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def role_of(name: str) -> str:
    if name == DEAD_QUEUE:
        return "dead"
    if name.startswith(f"{JOBS_EXCHANGE}.delay."):
        return "delay"
    if name.startswith(f"{JOBS_EXCHANGE}."):
        return "work"
    return "other"


def _rate(stats: dict[str, Any], name: str) -> float:
    details = stats.get(f"{name}_details") or {}
    return float(details.get("rate") or 0.0)


def queue_info(raw: dict[str, Any]) -> QueueInfo:
    """One queue from the management API's JSON (missing fields read as zero: a new queue has no stats yet)."""
    stats = raw.get("message_stats") or {}
    return QueueInfo(
        name=raw["name"],
        role=role_of(raw["name"]),
        messages=int(raw.get("messages") or 0),
        ready=int(raw.get("messages_ready") or 0),
        unacknowledged=int(raw.get("messages_unacknowledged") or 0),
        consumers=int(raw.get("consumers") or 0),
        publish_rate=_rate(stats, "publish"),
        deliver_rate=_rate(stats, "deliver_get"),
        ack_rate=_rate(stats, "ack"),
        arguments=dict(raw.get("arguments") or {}),
    )


def parked_message(raw: dict[str, Any]) -> ParkedMessage:
    properties = raw.get("properties") or {}
    headers = dict(properties.get("headers") or {})
    payload = raw.get("payload") or ""
    job_id = kind = None
    try:
        body = json.loads(payload)
        if isinstance(body, dict):
            job_id = str(body["job_id"]) if body.get("job_id") is not None else None
            kind = str(body["kind"]) if body.get("kind") is not None else None
    except ValueError:
        pass  # poison: the payload is shown as it is
    body = base64.b64decode(payload) if raw.get("payload_encoding") == "base64" else payload.encode()
    return ParkedMessage(
        reason=headers.get("x-reason"), job_id=job_id or properties.get("message_id"),
        kind=kind or properties.get("type"), service=headers.get("service"), payload=payload, headers=headers,
        id=parking_lot.parked_id(headers, body), parked_at=parking_lot.parked_at(headers),
    )


class Management:
    """A small client of the management API for the vhost of `settings.amqp_url`."""

    def __init__(self, settings: Settings) -> None:
        parts = urlsplit(settings.rabbitmq_management_url)
        self.ui_url = management_ui_url(settings.rabbitmq_management_url)  # for links; credentials never shown
        self.base = self.ui_url.rstrip("/")
        self.headers = {"Authorization": aiohttp.encode_basic_auth(unquote(parts.username or "guest"),
                                                                  unquote(parts.password or "guest"))}
        self.vhost = vhost_of(settings.amqp_url)

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with aiohttp.ClientSession(headers=self.headers, timeout=TIMEOUT) as session, session.request(
                method, f"{self.base}/api/{path}", json=body
            ) as response:
                if response.status >= 400:
                    raise ManagementUnavailable(
                        f"management API {method} /api/{path}: HTTP {response.status}"
                    )
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ManagementUnavailable(f"management API at {self.base} unreachable: {exc!r}") from exc

    async def queues(self) -> list[QueueInfo]:
        """Every queue of our vhost whose name starts with `jobs.`, work queues first, then delays, then dead."""
        raw = await self._request("GET", f"queues/{quote(self.vhost, safe='')}")
        found = [queue_info(item) for item in raw if role_of(item["name"]) != "other"]
        order = {"work": 0, "delay": 1, "dead": 2}
        return sorted(found, key=lambda queue: (order[queue.role], _delay_seconds(queue.name), queue.name))

    async def peek_dead(self, count: int = 20) -> list[ParkedMessage]:
        """Up to `count` messages at the head of the parking lot, left in place (rejected with requeue)."""
        raw = await self._request(
            "POST", f"queues/{quote(self.vhost, safe='')}/{quote(DEAD_QUEUE, safe='')}/get",
            {"count": count, "ackmode": "reject_requeue_true", "encoding": "auto", "truncate": 20000},
        )
        return [parked_message(item) for item in raw]


def _delay_seconds(name: str) -> int:
    suffix = name.rsplit(".", 1)[-1]
    return int(suffix[:-1]) if suffix.endswith("s") and suffix[:-1].isdigit() else 0
