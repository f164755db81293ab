"""Per-kind limits, cluster-wide: at most N runs of a kind at once, and at most N starts per period.

Declared with the kind (`JobKind(limits=KindLimits(...))`), overridden by KIND_LIMITS; the email kinds share
the `smtp` rate group whose rate is SMTP_RATE_PER_SECOND. Enforced in Postgres at claim time
(shared/db/limits.py), so they hold however many worker replicas there are. A job held back by a limit goes
back to `scheduled` (reason "waiting for limit …"), acked and off the worker, its attempt not counted: a rate
wait comes back exactly at its reserved start, a concurrency wait when a run of its kind ends (or after
LIMIT_RECHECK_SECONDS at the latest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

SMTP_GROUP = "smtp"  # the rate group of every kind that talks to the SMTP server
# A job waiting for a concurrency slot is looked at again after this long even when nothing woke it (a run
# that ended by lease expiry or an operator's cancel does not wake anyone).
LIMIT_RECHECK_SECONDS = 2.0


@dataclass(frozen=True)
class KindLimits:
    concurrency: int | None = None  # runs of this kind at once, across all workers
    rate: float | None = None  # starts per `per_seconds`, shared by the rate group
    per_seconds: float = 1.0
    group: str | None = None  # rate group; None: the kind's own name

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("a concurrency limit must be at least 1")
        if self.rate is not None and (self.rate <= 0 or self.per_seconds <= 0):
            raise ValueError("a rate must be a positive number of starts per a positive period")

    @property
    def interval(self) -> float | None:
        """Seconds between two starts in the rate group (starts are spaced evenly, no burst)."""
        return None if self.rate is None else self.per_seconds / self.rate

    @property
    def active(self) -> bool:
        return self.concurrency is not None or self.rate is not None

    def describe(self) -> str:
        parts = []
        if self.concurrency is not None:
            parts.append(f"at most {self.concurrency} at once")
        if self.rate is not None:
            parts.append(f"{self.rate:g} per {self.per_seconds:g}s")
        return ", ".join(parts) or "none"


class LimitOverride(BaseModel):
    """One kind's entry in KIND_LIMITS (JSON): `{"email.send": {"rate": 20, "per_seconds": 1}}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int | None = Field(None, ge=1)
    rate: float | None = Field(None, gt=0)
    per_seconds: float | None = Field(None, gt=0)


class LimitedKind(Protocol):
    """What effective_limits reads of a JobKind (a protocol, so this module imports neither registry nor
    settings, which both import it)."""

    @property
    def name(self) -> str: ...
    @property
    def limits(self) -> KindLimits | None: ...


class LimitSettings(Protocol):
    @property
    def smtp_rate_per_second(self) -> float | None: ...
    @property
    def kind_limits(self) -> Mapping[str, LimitOverride]: ...


def effective_limits(kinds: Iterable[LimitedKind], settings: LimitSettings) -> dict[str, KindLimits]:
    """The limits in force per kind name, for the kinds that have any."""
    found: dict[str, KindLimits] = {}
    for kind in kinds:
        limits = kind.limits or KindLimits()
        if limits.group == SMTP_GROUP and settings.smtp_rate_per_second is not None:
            limits = replace(limits, rate=settings.smtp_rate_per_second, per_seconds=1.0)
        override = settings.kind_limits.get(kind.name)
        if override is not None:
            limits = replace(limits, **override.model_dump(exclude_none=True))
        if limits.active:
            found[kind.name] = limits
    return found
