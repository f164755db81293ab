"""Reading a request: a JSON body or the query string as a model, a uuid path parameter, the Idempotency-Key
header. What cannot be read is an ApiError naming the field (415, 400, 422, or 404 for a path id)."""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from services.api.http.errors import ApiError, invalid_fields, validation_error

M = TypeVar("M", bound=BaseModel)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def unstorable_strings(value: Any, path: str = "") -> list[dict[str, str]]:
    """Strings Postgres cannot hold: NUL characters and lone surrogates (not encodable as UTF-8).

    Checked for every body, query and path value so they are a 422 naming the field, not a 500 from the driver.
    """
    found: list[dict[str, str]] = []
    if isinstance(value, str):
        if "\x00" in value:
            found.append({"field": path or "body", "message": "must not contain NUL characters"})
        else:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                found.append({"field": path or "body", "message": "must be valid Unicode (no lone surrogates)"})
    elif isinstance(value, dict):
        for key, item in value.items():
            found += unstorable_strings(key, f"{path}.{key}" if path else str(key))
            found += unstorable_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += unstorable_strings(item, f"{path}.{index}" if path else str(index))
    return found


def refuse_unstorable(value: Any, path: str = "") -> None:
    details = unstorable_strings(value, path)
    if details:
        raise invalid_fields(details)


JSON_TYPE = "application/json"


def require_json(request: web.Request) -> None:
    """415 unless the body is declared JSON: a browser sends a cross-site form or text/plain POST without a
    preflight, but never a cross-site application/json one, so this is also a CSRF guard."""
    if request.content_type != JSON_TYPE:
        given = request.headers.get("Content-Type", "none")
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be {JSON_TYPE}, not {given}",
                       [{"field": "Content-Type", "message": f"must be {JSON_TYPE}"}])


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request body as `model`: 415 unless it is JSON, 400 for malformed JSON, 422 naming each bad field."""
    require_json(request)
    raw = await request.read()
    try:
        data = json.loads(raw or b"null", parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}",
                       [{"field": "body", "message": str(exc)}]) from None
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "request body must be a JSON object",
                       [{"field": "body", "message": "must be a JSON object"}])
    refuse_unstorable(data)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise validation_error(error) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    query = dict(request.query)
    refuse_unstorable(query, "query")
    try:
        return model.model_validate(query)
    except ValidationError as error:
        raise validation_error(error, "query.") from None


def path_uuid(request: web.Request, name: str, what: str) -> uuid.UUID:
    """A uuid path parameter; anything else cannot name an existing resource, so it is a 404."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise ApiError(404, "not_found", f"no {what} with this id",
                       [{"field": name, "message": "not a uuid"}]) from None


IDEMPOTENCY_KEY_MAX = 200  # a btree index entry cannot hold an arbitrarily long key


def idempotency_key_header(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise ApiError(422, "validation_error", "invalid header Idempotency-Key", [
            {"field": "Idempotency-Key", "message": f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters"}])
    return key
