"""The contract's error shape, {"error": {"code", "message", "details"}}, for every failure, and the middleware
that answers with it. Reading a request (and refusing what it cannot be) is parsing.py's."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from services.api.http.app_keys import SETTINGS
from shared.job_actions import ActionRefused, JobNotFound
from shared.messages import field_messages

log = logging.getLogger(__name__)

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
