"""The retry policy as a pure decision: retry after N seconds, or give up and say why."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Jitter goes through the per-delay queues (a delay queue's TTL is fixed), so a jittered delay is one of this
# many fixed buckets spread evenly over delay * (1 +- jitter), picked at random: a burst of failures comes
# back in this many waves instead of one, and the set of delay queues stays small and known at start.
JITTER_BUCKETS = 5


def jitter_buckets(delay: int, jitter: float) -> tuple[int, ...]:
    """The delays (whole seconds, at least 1) a retry of `delay` may take with a `jitter` fraction."""
    steps = JITTER_BUCKETS // 2
    return tuple(sorted({max(1, int(delay * (1 + jitter * step / steps) + 0.5))
                         for step in range(-steps, steps + 1)}))


@dataclass(frozen=True)
class Retry:
    delay_seconds: int


@dataclass(frozen=True)
class GiveUp:
    reason: str


RetryDecision = Retry | GiveUp


@dataclass(frozen=True)
class RetryPolicy:
    """Hangfire's AutomaticRetry: `max_attempts` runs in all, waiting `delays[n-1]` after attempt n.

    When there are more attempts than delays, the last delay repeats. Each delay is spread by `jitter` (a
    fraction: 0.1 is ±10 %) over JITTER_BUCKETS fixed delays; None takes RETRY_JITTER (see `with_jitter`).
    """

    max_attempts: int
    delays: tuple[int, ...]
    jitter: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not self.delays or any(delay < 1 for delay in self.delays):
            raise ValueError("delays must be one or more whole seconds")
        if self.jitter is not None and not 0 <= self.jitter < 1:
            raise ValueError("jitter must be a fraction from 0 up to (not including) 1")

    def with_jitter(self, default: float) -> RetryPolicy:
        """This policy with `default` as its jitter when it declares none."""
        return self if self.jitter is not None else RetryPolicy(self.max_attempts, self.delays, default)

    def delay_after(self, attempt: int) -> int:
        return self.delays[min(attempt, len(self.delays)) - 1]

    def queue_delays(self) -> set[int]:
        """Every delay a retry under this policy may wait: the delay queues it needs."""
        return {bucket for delay in self.delays for bucket in jitter_buckets(delay, self.jitter or 0.0)}

    def decide(
        self, attempt: int, *, permanent: bool, max_attempts: int | None = None, rng: random.Random | None = None
    ) -> RetryDecision:
        """`attempt` is the 1-based number of the attempt that just failed."""
        if permanent:
            return GiveUp("permanent error")
        limit = max_attempts if max_attempts is not None else self.max_attempts
        if attempt >= limit:
            return GiveUp(f"attempts exhausted ({attempt} of {limit})")
        buckets = jitter_buckets(self.delay_after(attempt), self.jitter or 0.0)
        return Retry((rng or random).choice(buckets))
