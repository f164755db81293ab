"""The contract's error shape, {"error": {"code", "message", "details"}}, for every failure."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details if details is not None else []}}
    return web.json_response(body, status=status)


def field_errors(error: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    details = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        details.append({"field": f"{prefix}{field}" if field else prefix.rstrip(".") or "body",
                        "message": item["msg"]})
    return details


def validation_error(error: ValidationError, prefix: str = "") -> ApiError:
    details = field_errors(error, prefix)
    fields = ", ".join(detail["field"] for detail in details)
    return ApiError(422, "validation_error", f"invalid fields: {fields}", details)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request body as `model`: 400 for malformed JSON, 422 naming each bad field."""
    raw = await request.read()
    try:
        data = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}",
                       [{"field": "body", "message": str(exc)}]) from None
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "request body must be a JSON object",
                       [{"field": "body", "message": "must be a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise validation_error(error) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as error:
        raise validation_error(error, "query.") from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error.status, error.code, error.message, error.details)
    except web.HTTPRequestEntityTooLarge as error:
        return error_response(413, "payload_too_large", error.text or "request body is too large")
    except web.HTTPException as error:
        if error.status < 400 or error.content_type != "text/plain" or request.path.startswith("/jobs"):
            raise
        return error_response(error.status, error.reason.lower().replace(" ", "_"), error.reason)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, "internal_error", "internal server error")
