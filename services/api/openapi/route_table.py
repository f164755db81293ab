"""Routes that remember their models, so /api/openapi.json is generated from the code that serves it
(document.py builds it from the operations recorded here)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from services.api.http.errors import Handler
from services.api.http.parsing import IDEMPOTENCY_KEY_MAX


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    headers: tuple[HeaderParam, ...] = ()
    path_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    operator: bool = False  # needs an operator (or read-only) caller although its path is not an operator prefix
    rate_limited: bool = False

    def error_statuses(self) -> tuple[int, ...]:
        """The declared errors plus those every operation of its sort can get from the middlewares."""
        implied = set(self.errors)
        if self.method not in ("GET", "HEAD"):
            implied.add(403)  # a write from a foreign Origin
        if self.body is not None:
            implied.add(415)  # a body that is not declared application/json
        if self.operator:
            implied.add(401)
        if self.rate_limited:
            implied.add(429)
        return tuple(sorted(implied))


@dataclass(frozen=True)
class HeaderParam:
    """An optional request header the operation reads, e.g. Idempotency-Key."""

    name: str
    description: str
    max_length: int = IDEMPOTENCY_KEY_MAX


IDEMPOTENCY_KEY = HeaderParam(
    "Idempotency-Key", "Repeating a request with the same key returns the first result instead of acting twice."
)
UUID_PATH = {"type": "string", "format": "uuid"}


class ApiRoutes:
    """A RouteTableDef that also records each operation's request and response models."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.table = web.RouteTableDef()
        self.operations: list[Operation] = []

    def route(
        self, method: str, path: str, *, summary: str, body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None, responses: dict[int, type[BaseModel] | None] | None = None,
        errors: Iterable[int] = (), content_type: str = "application/json", headers: Iterable[HeaderParam] = (),
        path_schemas: dict[str, dict[str, Any]] | None = None, operator: bool = False, rate_limited: bool = False,
    ) -> Callable[[Handler], Handler]:
        operation = Operation(method.upper(), path, summary, self.tag, body, query, responses or {200: None},
                              tuple(errors), content_type, tuple(headers), path_schemas or {}, operator,
                              rate_limited)

        def register(handler: Handler) -> Handler:
            self.operations.append(operation)
            self.table.route(method.upper(), path)(handler)
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **options)

    def patch(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **options)
