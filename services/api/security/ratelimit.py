"""Rate limits on what anyone may call and what mails or guesses: sign-up, registration, dashboard login.

A token bucket per key (a client address, a target email address): `requests` per `seconds`, refilled
evenly, so a burst of `requests` passes and then one more each `seconds / requests`. The buckets live
in this process: each api replica counts on its own. The client is the TCP peer, never a forwarding
header, like the loopback rule in security/auth.py (a header would let a flooder pick a fresh address each time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from services.api.http.app_keys import SETTINGS
from services.api.http.errors import ApiError
from shared.settings import Settings

MAX_KEYS = 100_000  # memory bound: past it, full buckets go first, then the oldest


@dataclass
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, requests: int, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = requests
        self.rate = requests / seconds if requests else 0.0
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def take(self, key: str) -> float | None:
        """Count one request for `key`: None when allowed, else the seconds until one would be."""
        if not self.enabled:
            return None
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            self._make_room()
            bucket = self.buckets[key] = Bucket(float(self.capacity), now)
        bucket.tokens = min(float(self.capacity), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.rate

    def _make_room(self) -> None:
        if len(self.buckets) < MAX_KEYS:
            return
        now = self.clock()
        full = [key for key, bucket in self.buckets.items()
                if bucket.tokens + (now - bucket.updated) * self.rate >= self.capacity]
        for key in full:  # a full bucket is the same as no bucket
            del self.buckets[key]
        while len(self.buckets) >= MAX_KEYS:
            del self.buckets[next(iter(self.buckets))]


@dataclass(frozen=True)
class RateLimits:
    signup_client: RateLimiter
    register_client: RateLimiter
    email: RateLimiter  # sign-up and registration together: both mail the address
    login_client: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        def client() -> RateLimiter:
            return RateLimiter(settings.rate_limit_client_requests, settings.rate_limit_client_seconds)

        return cls(
            signup_client=client(), register_client=client(),
            email=RateLimiter(settings.rate_limit_email_requests, settings.rate_limit_email_seconds),
            login_client=RateLimiter(settings.login_rate_limit_requests, settings.login_rate_limit_seconds),
        )


RATE_LIMITS = web.AppKey("rate_limits", RateLimits)


def install(app: web.Application) -> None:
    app[RATE_LIMITS] = RateLimits.from_settings(app[SETTINGS])


def limits(request: web.Request) -> RateLimits:
    return request.app[RATE_LIMITS]


def client_address(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else "unknown"


class RateLimited(ApiError):
    def __init__(self, retry_after: float, field: str, message: str) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(429, "rate_limited", f"{message}; try again in {self.retry_after} s",
                         [{"field": field, "message": message}], headers={"Retry-After": str(self.retry_after)})


def check(limiter: RateLimiter, key: str, field: str, message: str) -> None:
    """Count one request under `key`; raise RateLimited (429 with Retry-After) when over the limit."""
    wait = limiter.take(key)
    if wait is not None:
        raise RateLimited(wait, field, message)


def check_client(request: web.Request, limiter: RateLimiter) -> None:
    check(limiter, client_address(request), "client", "too many requests from this address")


def check_email(request: web.Request, email: str) -> None:
    check(limits(request).email, email.lower(), "email", "too many requests for this email address")
