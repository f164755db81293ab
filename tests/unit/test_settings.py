"""A wrong setting stops the process with a message naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.settings import Settings, describe_errors, load_settings


def settings_from(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_defaults_follow_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RETRY_ATTEMPTS", "RETRY_DELAYS", "SCHEDULER_TIMEZONE", "WORKER_CONCURRENCY", "WORKER_PREFETCH"):
        monkeypatch.delenv(name, raising=False)
    settings = settings_from(monkeypatch)
    assert settings.retry_attempts == 3
    assert settings.retry_delays == (60, 300, 900)
    assert settings.scheduler_timezone == "UTC"
    assert settings.prefetch_for(8) == 8


def test_comma_separated_values(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(monkeypatch, RETRY_DELAYS="1, 2", ADMIN_EMAILS="a@x.org,b@x.org",
                             SCHEDULER_TIMEZONE="Europe/Berlin", WORKER_CONCURRENCY="4")
    assert settings.retry_delays == (1, 2)
    assert settings.admin_emails == ["a@x.org", "b@x.org"]
    assert settings.scheduler_timezone == "Europe/Berlin"
    assert (settings.concurrency_for(10), settings.prefetch_for(10)) == (4, 4)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RETRY_DELAYS", "60,soon"),
        ("RETRY_DELAYS", "0,60"),
        ("RETRY_DELAYS", ""),
        ("RETRY_ATTEMPTS", "0"),
        ("SCHEDULER_TIMEZONE", "Mars/Olympus_Mons"),
        ("WORKER_PREFETCH", "-1"),
        ("SMTP_PORT", "70000"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert f"invalid setting {variable}=" in describe_errors(raised.value)


def test_load_settings_exits_with_the_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RETRY_DELAYS", "60,soon")
    monkeypatch.setenv("SCHEDULER_TIMEZONE", "Nowhere/City")
    monkeypatch.chdir("/")  # no stray .env from the working directory
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert exited.value.code == 2
    message = capsys.readouterr().err
    assert "RETRY_DELAYS" in message and "SCHEDULER_TIMEZONE" in message and "Nowhere/City" in message


def test_every_setting_is_read_somewhere() -> None:
    # A documented variable that no code reads lets an operator change it and see nothing happen.
    root = Path(__file__).resolve().parents[2]
    code = "\n".join(path.read_text() for folder in ("shared", "services", "scripts")
                     for path in (root / folder).rglob("*.py"))
    unread = [name for name in Settings.model_fields if not re.search(rf"\.{name}\b", code)]
    assert unread == []
