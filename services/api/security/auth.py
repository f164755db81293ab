"""Who may call the operator endpoints and the /jobs dashboard, and what each caller may change.

Credentials are a bearer token (API_TOKEN: operator, API_READ_ONLY_TOKEN: read-only) or the
HMAC-signed session cookie the dashboard's login form sets from one of those tokens. Without
API_TOKEN, loopback clients are operators, like Hangfire's default; "loopback" is the TCP peer,
never a forwarding header, so X-Forwarded-For cannot make a remote client local.

The read-only role (the second token, or everyone when DASHBOARD_READ_ONLY=true) sees everything
and gets 403 on every action. Browser writes are checked twice: the Origin header must be ours,
and dashboard forms carry a CSRF token bound to a per-browser cookie.

Besides the operator prefixes, single platform operations are operator-only (participant lists,
creating, moving and cancelling events): their routes say so (`ApiRoutes(..., operator=True)`) and
the app hands the set to this module under OPERATOR_ROUTES. Every write, public ones included, is
refused when it comes from a foreign Origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from services.api.http.app_keys import SETTINGS
from services.api.http.errors import ApiError, Handler
from shared.settings import Settings

PROTECTED_PREFIXES = ("/api/jobs", "/api/recurring", "/api/servers", "/api/queues", "/api/stats", "/jobs")
DASHBOARD = "/jobs"
LOGIN_PATH = "/jobs/login"
LOGOUT_PATH = "/jobs/logout"
STATIC_PREFIX = "/jobs/static/"
# The client write path (enqueue) is not an operator action: DASHBOARD_READ_ONLY leaves it to operators.
ENQUEUE_PATHS = ("/api/jobs", "/api/jobs/batch")

SESSION_COOKIE = "eventjobs_session"
CSRF_COOKIE = "eventjobs_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SESSION_KEY = web.AppKey("session_key", bytes)
# (method, route pattern) of the operations outside PROTECTED_PREFIXES that need an operator or read-only caller.
OPERATOR_ROUTES = web.AppKey("operator_routes", frozenset[tuple[str, str]])


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
CSRF_TOKEN = web.RequestKey("csrf_token", str)
_NEW_CSRF_SEED = web.RequestKey("new_csrf_seed", str)


def install(app: web.Application) -> None:
    """The key that signs sessions and CSRF tokens: SESSION_SECRET, or a random one for this process."""
    secret = app[SETTINGS].session_secret
    app[SESSION_KEY] = hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32)


def is_protected(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PROTECTED_PREFIXES)


def route_is_operator_only(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    if resource is None or OPERATOR_ROUTES not in request.app:
        return False
    method = "GET" if request.method == "HEAD" else request.method
    return (method, resource.canonical) in request.app[OPERATOR_ROUTES]


def is_dashboard(path: str) -> bool:
    return path == DASHBOARD or path.startswith(DASHBOARD + "/")


def is_public(path: str) -> bool:
    """The login page and the stylesheet it needs are served to anyone."""
    return path == LOGIN_PATH or path.startswith(STATIC_PREFIX)


def is_action(method: str, path: str) -> bool:
    """A request that changes state on an operator's behalf (logging in or out changes no job)."""
    if method in SAFE_METHODS or path in (LOGIN_PATH, LOGOUT_PATH):
        return False
    return is_protected(path)


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


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: str, value: str) -> str:
    return _b64(hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest())


def token_fingerprint(key: bytes, token: str) -> str:
    """Stored in the session, so rotating a token ends the sessions opened with the old one."""
    return _mac(key, "token", token)[:22]


def sign_session(key: bytes, role: Role, fingerprint: str, expires: float) -> str:
    payload = _b64(json.dumps({"r": role.value, "t": fingerprint, "e": int(expires)}).encode())
    return f"{payload}.{_mac(key, 'session', payload)}"


def read_session(key: bytes, value: str, now: float) -> tuple[Role, str] | None:
    """(role, token fingerprint) of a cookie this process family signed and that has not expired."""
    payload, _, signature = value.partition(".")
    if not payload or not hmac.compare_digest(signature.encode(), _mac(key, "session", payload).encode()):
        return None
    try:
        data: dict[str, Any] = json.loads(_unb64(payload))
        role, fingerprint, expires = Role(data["r"]), str(data["t"]), float(data["e"])
    except (ValueError, KeyError, TypeError):
        return None
    return (role, fingerprint) if expires > now else None


def session_role(request: web.Request, settings: Settings) -> Role | None:
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        return None
    key = request.app[SESSION_KEY]
    found = read_session(key, value, time.time())
    if found is None:
        return None
    role, fingerprint = found
    current = settings.api_token if role is Role.OPERATOR else settings.api_read_only_token
    if current is None or not hmac.compare_digest(fingerprint, token_fingerprint(key, current)):
        return None
    return role


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


def refused_read_only(principal: Principal, settings: Settings, method: str, path: str) -> bool:
    """Read-only callers may change nothing; DASHBOARD_READ_ONLY closes the operator actions, not the
    platform's own writes (enqueueing, events), which are what the services exist for."""
    if method in SAFE_METHODS or path in (LOGIN_PATH, LOGOUT_PATH):
        return False
    if principal.read_only:
        return True
    return settings.dashboard_read_only and is_action(method, path) and path not in ENQUEUE_PATHS


def session_cookie_for(request: web.Request, role: Role, token: str) -> str:
    key = request.app[SESSION_KEY]
    return sign_session(key, role, token_fingerprint(key, token), time.time() + SESSION_SECONDS)


def set_session(response: web.StreamResponse, request: web.Request, value: str) -> None:
    response.set_cookie(SESSION_COOKIE, value, path="/", max_age=SESSION_SECONDS, httponly=True,
                        samesite="Strict", secure=request.secure)


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")


# CSRF: a random seed in an HttpOnly SameSite cookie, the form carries HMAC(seed). A foreign page can
# neither read the seed nor the token, and a token is worthless without its browser's cookie.

def csrf_token_for(key: bytes, seed: str) -> str:
    return _mac(key, "csrf", seed)


def csrf_seed(request: web.Request) -> str:
    seed = request.cookies.get(CSRF_COOKIE, "")
    if 16 <= len(seed) <= 64 and seed.replace("-", "").replace("_", "").isalnum():
        return seed
    seed = secrets.token_urlsafe(24)
    request[_NEW_CSRF_SEED] = seed
    return seed


async def csrf_ok(request: web.Request) -> bool:
    seed = request.cookies.get(CSRF_COOKIE)
    if not seed:
        return False
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    expected = csrf_token_for(request.app[SESSION_KEY], seed)
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


def origin_ok(request: web.Request) -> bool:
    """A browser names the page a write came from; it must be this site. Non-browser clients send none."""
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        if referer is None:
            return True
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin == f"{request.scheme}://{request.host}"


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


# The dashboard's page for a refused request (its login form, or a message), installed by the dashboard:
# this module cannot import the renderer, which reads this module's CSRF names.
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
    seed = request.get(_NEW_CSRF_SEED)
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
