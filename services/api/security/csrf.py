"""Browser writes are checked twice: the Origin header must be ours, and dashboard forms carry a CSRF token.

CSRF: a random seed in an HttpOnly SameSite cookie, the form carries HMAC(seed). A foreign page can neither
read the seed nor the token, and a token is worthless without its browser's cookie.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from aiohttp import web

from services.api.security.sessions import SESSION_KEY, mac

CSRF_COOKIE = "eventjobs_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

CSRF_TOKEN = web.RequestKey("csrf_token", str)
NEW_CSRF_SEED = web.RequestKey("new_csrf_seed", str)  # a seed made for this request, for the response's cookie


def csrf_token_for(key: bytes, seed: str) -> str:
    return mac(key, "csrf", seed)


def csrf_seed(request: web.Request) -> str:
    seed = request.cookies.get(CSRF_COOKIE, "")
    if 16 <= len(seed) <= 64 and seed.replace("-", "").replace("_", "").isalnum():
        return seed
    seed = secrets.token_urlsafe(24)
    request[NEW_CSRF_SEED] = seed
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
