"""The contract's error shape, {"error": {"code", "message", "details"}}, for every failure."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from services.api.http.app_keys import SETTINGS
from shared.job_actions import ActionRefused, JobNotFound
from shared.messages import field_messages

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

# What an unreachable or restarting Postgres raises: a lost or refused connection (class 08), a shutdown or a
# not-yet-ready server (class 57), the socket itself, a pool that could not hand out a connection in time, or
# asyncpg's protocol errors on a pooled connection the server shut down under it ("cannot switch to state").
DEPENDENCY_ERRORS = (asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
                     asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError, TimeoutError)
RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details if details is not None else []}}
    return web.json_response(body, status=status)


def field_errors(error: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """One message per bad field, written for people (shared/messages.py)."""
    return field_messages(error.errors(), prefix)


def invalid_fields(details: list[dict[str, str]]) -> ApiError:
    """The 422 for bad values: the message names every field, the details say what is wrong with each."""
    fields = ", ".join(detail["field"] for detail in details)
    return ApiError(422, "validation_error", f"invalid fields: {fields}", details)


def refused(error: ActionRefused) -> ApiError:
    """An operator action on one job that cannot be done (shared/job_actions.py): 404 for an unknown job,
    409 when its state does not allow the action."""
    if isinstance(error, JobNotFound):
        return ApiError(404, "not_found", str(error), [{"field": "job_id", "message": "not found"}])
    return ApiError(409, "invalid_state", str(error), [{"field": "state", "message": str(error)}])


def validation_error(error: ValidationError, prefix: str = "") -> ApiError:
    return invalid_fields(field_errors(error, prefix))


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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        response = error_response(error.status, error.code, error.message, error.details)
        response.headers.update(error.headers)
        return response
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes if SETTINGS in request.app else None
        return error_response(413, "payload_too_large", f"request body is larger than {limit} bytes",
                              [{"field": "body", "message": f"at most {limit} bytes"}])
    except web.HTTPException as error:
        if error.status < 400 or error.content_type != "text/plain" or request.path.startswith("/jobs"):
            raise
        response = error_response(error.status, error.reason.lower().replace(" ", "_"), error.reason)
        if "Allow" in error.headers:  # a 405 must still say which methods are allowed
            response.headers["Allow"] = error.headers["Allow"]
        return response
    except DEPENDENCY_ERRORS as exc:
        # Postgres is restarting or unreachable: a caller can retry this, which a 500 would not tell it.
        log.warning("database unavailable", extra={"path": request.path, "error": repr(exc)}, exc_info=True)
        response = error_response(503, "service_unavailable", "the database is unavailable; try again shortly",
                                  [{"dependency": "postgres", "message": str(exc) or type(exc).__name__}])
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, "internal_error", "internal server error")
