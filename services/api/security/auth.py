"""Who may call the operator endpoints and the /jobs dashboard, and what each caller may change: the middleware.

Credentials are a bearer token (API_TOKEN: operator, API_READ_ONLY_TOKEN: read-only; roles.py) or the
HMAC-signed session cookie the dashboard's login form sets from one of those tokens (sessions.py). Without
API_TOKEN, loopback clients are operators, like Hangfire's default; "loopback" is the TCP peer,
never a forwarding header, so X-Forwarded-For cannot make a remote client local.

Which requests need a caller, and which writes a reader is refused, is access.py's. Browser writes are checked
twice (csrf.py): the Origin header must be ours, and dashboard forms carry a CSRF token bound to a per-browser
cookie. Every write, public ones included, is refused when it comes from a foreign Origin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

from services.api.http.app_keys import SETTINGS
from services.api.http.errors import ApiError, Handler
from services.api.security.access import (
    DASHBOARD,
    LOGIN_PATH,
    SAFE_METHODS,
    is_dashboard,
    is_protected,
    is_public,
    refused_read_only,
    route_is_operator_only,
)
from services.api.security.csrf import (
    CSRF_COOKIE,
    CSRF_TOKEN,
    NEW_CSRF_SEED,
    csrf_ok,
    csrf_seed,
    csrf_token_for,
    origin_ok,
)
from services.api.security.roles import PRINCIPAL, Principal, Role, role_for_token, tokens_configured
from services.api.security.sessions import SESSION_KEY, session_role
from shared.settings import Settings


def is_loopback(request: web.Request) -> bool:
    """The TCP peer, never a forwarding header: X-Forwarded-For cannot make a remote client local."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer[0]).is_loopback
    except ValueError:
        return False


def host_is_local(request: web.Request, settings: Settings) -> bool:
    """The Host header names this machine, so a DNS-rebound foreign name cannot ride on loopback trust."""
    host = (urlsplit(f"//{request.host}").hostname or "").lower()
    if host in ("localhost", settings.api_host.lower()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate(request: web.Request, settings: Settings) -> Principal | None:
    token = bearer_token(request)
    if token is not None and tokens_configured(settings):
        role = role_for_token(settings, token)
        return Principal(role, "bearer") if role is not None else None  # a wrong token is never ignored
    if SESSION_KEY in request.app:
        role = session_role(request, settings)
        if role is not None:
            return Principal(role, "session")
    if not settings.api_token and is_loopback(request) and host_is_local(request, settings):
        return Principal(Role.OPERATOR, "loopback")
    return None


# The dashboard's page for a refused request (its login form, or a message), installed by the dashboard:
# security/ does not import the dashboard, whose renderer reads csrf.py's names.
RefusalPage = Callable[[web.Request, int, str, bool], web.StreamResponse]
REFUSAL_PAGE: web.AppKey[RefusalPage] = web.AppKey("dashboard_refusal_page")


def _dashboard_refusal(request: web.Request, status: int, message: str) -> web.StreamResponse:
    login = status == 401 and tokens_configured(request.app[SETTINGS]) and request.method in SAFE_METHODS
    return request.app[REFUSAL_PAGE](request, status, message, login)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if not (is_protected(path) or route_is_operator_only(request)):
        if request.method not in SAFE_METHODS and not origin_ok(request):
            raise ApiError(403, "forbidden", "the request comes from a foreign Origin",
                           [{"field": "Origin", "message": "must be this site"}])
        return await handler(request)
    settings = request.app[SETTINGS]
    dashboard = is_dashboard(path) and SESSION_KEY in request.app
    if dashboard:
        request[CSRF_TOKEN] = csrf_token_for(request.app[SESSION_KEY], csrf_seed(request))
    response = await _guarded(request, handler, settings, dashboard)
    seed = request.get(NEW_CSRF_SEED)
    if seed is not None and not response.prepared:
        response.set_cookie(CSRF_COOKIE, seed, path=DASHBOARD, httponly=True, samesite="Strict",
                            secure=request.secure)
    return response


async def _guarded(request: web.Request, handler: Handler, settings: Settings, dashboard: bool) -> web.StreamResponse:
    path, method = request.path, request.method

    def refuse(status: int, code: str, message: str) -> web.StreamResponse:
        if dashboard:
            return _dashboard_refusal(request, status, message)
        raise ApiError(status, code, message)

    writes = method not in SAFE_METHODS
    if dashboard and is_public(path) and not writes:
        return await handler(request)
    principal = authenticate(request, settings)
    if principal is None and not (dashboard and path == LOGIN_PATH):
        if settings.api_token:
            return refuse(401, "unauthorized", "a valid 'Authorization: Bearer <API_TOKEN>' or a login is required")
        return refuse(401, "unauthorized", "without API_TOKEN only loopback clients are served")
    if writes and not origin_ok(request):
        return refuse(403, "forbidden", "the request comes from a foreign Origin")
    if writes and dashboard and not await csrf_ok(request):
        return refuse(403, "forbidden", "missing or wrong CSRF token; reload the page and try again")
    if principal is not None:
        request[PRINCIPAL] = principal
        if refused_read_only(principal, settings, method, path):
            return refuse(403, "forbidden", "read-only access: actions are not allowed")
    return await handler(request)
