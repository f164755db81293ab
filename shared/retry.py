"""The retry policy as a pure decision: retry after N seconds, or give up and say why."""

from __future__ import annotations

from dataclasses import dataclass


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

    When there are more attempts than delays, the last delay repeats.
    """

    max_attempts: int
    delays: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not self.delays or any(delay < 1 for delay in self.delays):
            raise ValueError("delays must be one or more whole seconds")

    def delay_after(self, attempt: int) -> int:
        return self.delays[min(attempt, len(self.delays)) - 1]

    def decide(self, attempt: int, *, permanent: bool, max_attempts: int | None = None) -> RetryDecision:
        """`attempt` is the 1-based number of the attempt that just failed."""
        if permanent:
            return GiveUp("permanent error")
        limit = max_attempts if max_attempts is not None else self.max_attempts
        if attempt >= limit:
            return GiveUp(f"attempts exhausted ({attempt} of {limit})")
        return Retry(self.delay_after(attempt))
