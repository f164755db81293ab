"""The two roles and the tokens that grant them: API_TOKEN makes an operator, API_READ_ONLY_TOKEN a reader.

The read-only role (the second token, or everyone when DASHBOARD_READ_ONLY=true) sees everything and gets 403
on every action. Who a request comes from is its Principal, set by the auth middleware (auth.py).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from services.api.http.app_keys import SETTINGS
from shared.settings import Settings


class Role(StrEnum):
    OPERATOR = "operator"  # sees everything, may act
    READ_ONLY = "read_only"  # sees everything, every action is refused


@dataclass(frozen=True)
class Principal:
    role: Role
    via: str  # "bearer", "session" or "loopback"

    @property
    def read_only(self) -> bool:
        return self.role is Role.READ_ONLY


PRINCIPAL = web.RequestKey("principal", Principal)


def token_matches(given: str | None, expected: str | None) -> bool:
    return bool(given and expected and hmac.compare_digest(given.encode(), expected.encode()))


def role_for_token(settings: Settings, token: str | None) -> Role | None:
    if token_matches(token, settings.api_token):
        return Role.OPERATOR
    if token_matches(token, settings.api_read_only_token):
        return Role.READ_ONLY
    return None


def tokens_configured(settings: Settings) -> bool:
    return bool(settings.api_token or settings.api_read_only_token)


def principal_of(request: web.Request) -> Principal | None:
    return request.get(PRINCIPAL)


def actor(request: web.Request) -> str:
    """Who is acting, as recorded on what they changed (a cancelled job's `cancelled_by`): tokens are shared
    per role, so the role, how it authenticated and the TCP peer are what can be told."""
    principal = principal_of(request)
    who = f"{principal.role.value} via {principal.via}" if principal is not None else "anonymous"
    return f"{who} from {request.remote or 'unknown address'}"


def sees_secrets(request: web.Request) -> bool:
    """Whether the JSON API may show this caller raw arguments, errors and logs: operators only, and not
    under DASHBOARD_READ_ONLY (which makes everyone a reader). The dashboard redacts for everyone."""
    principal = principal_of(request)
    return principal is not None and not principal.read_only and not request.app[SETTINGS].dashboard_read_only
