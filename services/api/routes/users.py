"""/api/users: sign-up, which sends the welcome email."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from services.api.http.errors import ApiError
from services.api.http.parsing import parse_body
from services.api.openapi.route_table import ApiRoutes
from services.api.operations.signups import SIGNUPS
from services.api.routes.metrics import count_enqueued
from services.api.security import ratelimit
from shared.kinds import EmailAddress, HeaderText

routes = ApiRoutes("users")


def normalise_email(value: str) -> str:
    """Addresses compare case-insensitively in practice; one spelling per person keeps `unique` meaningful."""
    return value.lower()


# The JSON schemas say what the validators enforce, so clients (and schemathesis) can know it up front.
# Header-safe characters: no control characters (C0, DEL, C1 with U+0085) and no U+2028/U+2029 (shared/kinds.py).
_HEADER_CHAR = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]"
_ADDRESS_CHAR = r"[^@\s\x00-\x1f\x7f-\x9f\u2028\u2029]"
Email = Annotated[EmailAddress, AfterValidator(normalise_email), WithJsonSchema(
    {"type": "string", "maxLength": 320, "pattern": f"^{_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+$"})]
Name = Annotated[HeaderText, Field(max_length=200), WithJsonSchema(
    {"type": "string", "minLength": 1, "maxLength": 200, "pattern": f"^{_HEADER_CHAR}+$"})]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name  # it becomes the display name in the welcome email's To: header


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    welcome_job_id: uuid.UUID | None = None


@routes.post("/api/users", summary="Sign a user up and send the welcome email", body=UserIn,
             responses={201: UserOut}, errors=(400, 409, 413, 422), rate_limited=True)
async def create_user(request: web.Request) -> web.Response:
    # Counted before anything is read: a flood costs neither a body parse nor a row.
    ratelimit.check_client(request, ratelimit.limits(request).signup_client)
    body = await parse_body(request, UserIn)
    ratelimit.check_email(request, body.email)
    # Concurrent sign-ups share one transaction; each is answered once its own row and job are committed
    # and its job is published (services/api/operations/signups.py).
    signed_up = await request.app[SIGNUPS].sign_up(body.email, body.name)
    if signed_up is None:
        raise ApiError(409, "conflict", f"a user with email {body.email!r} exists",
                       [{"field": "email", "message": "is already registered"}])
    count_enqueued(request.app, signed_up.job.kind)
    user = UserOut.model_validate({**dict(signed_up.user), "welcome_job_id": signed_up.job.id})
    return web.json_response(user.model_dump(mode="json"), status=201)
