"""Job kinds: what each kind takes, where it runs, how it retries. Validation happens before any write.

A kind is declared once, as a `JobKind` (shared/kinds.py for the platform's), and its handler is marked
with `@handles(KIND)`; the topology, the api's validation, the OpenAPI enum, the event schedule and the
worker's handler table all read the declaration. `check_handlers` is the worker's start-up check that the
two halves meet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.jobs import QueueClass
from shared.limits import KindLimits
from shared.messages import field_messages
from shared.retry import RetryPolicy


class UnknownJobKind(LookupError):
    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown job kind {kind!r}")
        self.kind = kind


class InvalidJobArguments(ValueError):
    def __init__(self, kind: str, error: ValidationError) -> None:
        self.kind = kind
        self.details = field_messages(error.errors(), whole="")
        fields = ", ".join(detail["field"] or "args" for detail in self.details)
        super().__init__(f"arguments do not fit job kind {kind!r}: {fields}")


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help (a rejected recipient, a bad argument)."""


@dataclass(frozen=True)
class JobKind:
    name: str
    args_model: type[BaseModel]
    service: str
    queue: QueueClass = QueueClass.DEFAULT
    retry: RetryPolicy | None = None  # None: the settings' RETRY_ATTEMPTS / RETRY_DELAYS
    timeout_seconds: float = 300.0
    limits: KindLimits | None = None  # cluster-wide concurrency / rate; KIND_LIMITS overrides (shared/limits.py)
    # Part of every event's schedule: enqueued this long before the event starts, moved with it, deleted
    # when it is cancelled. Its arguments are the event's (`event_id`, `starts_at`, `schedule_revision`).
    before_event: timedelta | None = None

    def parse(self, args: Mapping[str, Any]) -> BaseModel:
        try:
            return self.args_model.model_validate(dict(args))
        except ValidationError as error:
            raise InvalidJobArguments(self.name, error) from None


class Registry:
    def __init__(self, kinds: Iterable[JobKind] = ()) -> None:
        self._kinds: dict[str, JobKind] = {}
        for kind in kinds:
            self.add(kind)

    def add(self, kind: JobKind) -> JobKind:
        if kind.name in self._kinds:
            raise ValueError(f"job kind {kind.name!r} registered twice")
        self._kinds[kind.name] = kind
        return kind

    def get(self, name: str) -> JobKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownJobKind(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Any:
        return iter(self._kinds.values())

    def validate(self, name: str, args: Mapping[str, Any]) -> tuple[JobKind, dict[str, Any]]:
        """The kind and its arguments normalised to JSON, or UnknownJobKind / InvalidJobArguments."""
        kind = self.get(name)
        return kind, kind.parse(args).model_dump(mode="json")

    def services(self) -> list[str]:
        return sorted({kind.service for kind in self._kinds.values()})

    def retry_delays(self) -> set[int]:
        return {delay for kind in self._kinds.values() if kind.retry for delay in kind.retry.delays}

    def of_service(self, service: str) -> list[JobKind]:
        return [kind for kind in self._kinds.values() if kind.service == service]

    def event_schedule(self) -> list[tuple[str, timedelta]]:
        """The kinds every event schedules for itself, and how long before its start each runs."""
        return [(kind.name, kind.before_event) for kind in self._kinds.values() if kind.before_event is not None]

    def event_kinds(self) -> list[str]:
        return [name for name, _ in self.event_schedule()]


HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])
_KIND_ATTRIBUTE = "__eventjobs_kind__"


def handles(kind: JobKind) -> Callable[[HandlerT], HandlerT]:
    """Marks a handler (a function or a method) as the one that runs `kind`."""

    def mark(handler: HandlerT) -> HandlerT:
        setattr(handler, _KIND_ATTRIBUTE, kind)
        return handler

    return mark


def kind_of(handler: Callable[..., Any]) -> JobKind | None:
    return getattr(handler, _KIND_ATTRIBUTE, None)


def handlers_on(owner: object) -> dict[str, Callable[..., Any]]:
    """The `@handles`-marked functions or methods of a module or an object, by kind name."""
    found: dict[str, Callable[..., Any]] = {}
    for name in dir(owner):
        member = getattr(owner, name)
        kind = kind_of(member) if callable(member) else None
        if kind is None:
            continue
        if kind.name in found:
            raise HandlerMismatch(f"job kind {kind.name!r} has two handlers: {found[kind.name].__qualname__} "
                                  f"and {member.__qualname__}")
        found[kind.name] = member
    return found


class HandlerMismatch(Exception):
    """A worker's handlers and the kinds its service owns do not match; the worker refuses to start."""


def check_handlers(registry: Registry, service: str, handlers: Mapping[str, Callable[..., Any]]) -> None:
    """Every kind `service` owns has a handler, and every handler runs a kind of `service`."""
    problems = [f"job kind {kind.name!r} of service {service!r} has no handler (mark the function that runs it "
                f"with @handles)" for kind in registry.of_service(service) if kind.name not in handlers]
    for name, handler in handlers.items():
        label = getattr(handler, "__qualname__", repr(handler))
        if name not in registry:
            problems.append(f"handler {label} is for job kind {name!r}, which is not declared")
        elif registry.get(name).service != service:
            problems.append(f"handler {label} is for job kind {name!r} of service "
                            f"{registry.get(name).service!r}, not {service!r}")
    if problems:
        raise HandlerMismatch("; ".join(problems))
