"""Job kinds: what each kind takes, where it runs, how it retries. Validation happens before any write."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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

    def add(self, kind: JobKind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"job kind {kind.name!r} registered twice")
        self._kinds[kind.name] = kind

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
