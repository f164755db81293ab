"""Which limits are in force per kind: declared with the kind, SMTP_RATE_PER_SECOND, KIND_LIMITS."""

from __future__ import annotations

import pytest

from shared.kinds import PLATFORM_KINDS
from shared.limits import KindLimits, effective_limits
from shared.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_the_maintenance_scans_never_overlap_and_email_has_no_rate_by_default() -> None:
    limits = effective_limits(PLATFORM_KINDS, settings())
    assert limits == {name: KindLimits(concurrency=1) for name in (
        "maintenance.cleanup_expired_events", "maintenance.cleanup_old_logs", "maintenance.daily_report")}


def test_the_smtp_rate_is_shared_by_every_kind_that_sends_mail() -> None:
    limits = effective_limits(PLATFORM_KINDS, settings(smtp_rate_per_second=20))
    smtp = {name for name, limit in limits.items() if limit.group == "smtp"}
    assert smtp == {"email.welcome", "email.event_confirmation", "email.send"}
    assert {limits[name].interval for name in smtp} == {0.05}


def test_kind_limits_override_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIND_LIMITS", '{"event.reminder": {"concurrency": 3}, '
                                      '"maintenance.daily_report": {"rate": 2, "per_seconds": 60}}')
    limits = effective_limits(PLATFORM_KINDS, Settings(_env_file=None))  # type: ignore[call-arg]
    assert limits["event.reminder"] == KindLimits(concurrency=3)
    assert limits["maintenance.daily_report"] == KindLimits(concurrency=1, rate=2, per_seconds=60)
    assert limits["maintenance.daily_report"].interval == 30


@pytest.mark.parametrize("bad", ['{"email.send": {"concurrency": 0}}', '{"email.send": {"burst": 2}}', "[1]"])
def test_a_bad_kind_limits_value_is_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("KIND_LIMITS", bad)
    with pytest.raises(ValueError, match="kind_limits"):
        Settings(_env_file=None)  # type: ignore[call-arg]
