"""Who may call the operator endpoints: a bearer token when API_TOKEN is set, else loopback clients only."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from services.api.errors import ApiError, Handler
from services.api.typedefs import SETTINGS

PROTECTED_PREFIXES = ("/api/jobs", "/api/recurring", "/api/servers", "/api/queues", "/api/stats", "/jobs")


def is_protected(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "?")
               for prefix in PROTECTED_PREFIXES)


def is_loopback(request: web.Request) -> bool:
    """The TCP peer, never a forwarding header: X-Forwarded-For cannot make a remote client local."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer[0]).is_loopback
    except ValueError:
        return False


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_matches(given: str | None, expected: str | None) -> bool:
    return bool(given and expected and hmac.compare_digest(given.encode(), expected.encode()))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_protected(request.path):
        settings = request.app[SETTINGS]
        if settings.api_token:
            if not token_matches(bearer_token(request), settings.api_token):
                raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <API_TOKEN>' is required")
        elif not is_loopback(request):
            raise ApiError(401, "unauthorized", "without API_TOKEN only loopback clients are served")
    return await handler(request)
