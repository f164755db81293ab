"""The registry refuses unknown kinds and arguments that do not fit, before anything is written."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from shared.jobs import QueueClass
from shared.registry import InvalidJobArguments, JobKind, Registry, UnknownJobKind
from shared.retry import RetryPolicy


class SendArgs(BaseModel):
    to: str
    count: int = 1


def registry() -> Registry:
    return Registry([
        JobKind("mail.send", SendArgs, "email", QueueClass.CRITICAL),
        JobKind("mail.slow", SendArgs, "email", retry=RetryPolicy(2, (30, 90))),
        JobKind("tidy.up", SendArgs, "maintenance", retry=RetryPolicy(5, (60,))),
    ])


def test_validate_returns_the_kind_and_json_ready_arguments() -> None:
    kind, args = registry().validate("mail.send", {"to": "a@example.org", "count": "3"})
    assert kind.name == "mail.send" and kind.queue is QueueClass.CRITICAL
    assert args == {"to": "a@example.org", "count": 3}


def test_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(UnknownJobKind, match=r"'mail\.nope'"):
        registry().validate("mail.nope", {})


@pytest.mark.parametrize(
    ("args", "fields"),
    [({}, ["to"]), ({"to": "x", "count": "many"}, ["count"]), ({"count": []}, ["to", "count"])],
)
def test_arguments_that_do_not_fit_name_the_fields(args: dict[str, object], fields: list[str]) -> None:
    with pytest.raises(InvalidJobArguments) as raised:
        registry().validate("mail.send", args)
    assert [detail["field"] for detail in raised.value.details] == fields
    assert raised.value.kind == "mail.send"


def test_a_kind_registered_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        Registry([JobKind("a", SendArgs, "s"), JobKind("a", SendArgs, "t")])


def test_services_and_retry_delays_feed_the_topology() -> None:
    assert registry().services() == ["email", "maintenance"]
    assert registry().retry_delays() == {30, 60, 90}
    assert "mail.send" in registry() and "mail.nope" not in registry()
