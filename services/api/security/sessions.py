"""The dashboard's login session: an HMAC-signed cookie naming the role and a fingerprint of the token it was
opened with, so rotating a token ends the sessions opened with the old one. The same key signs CSRF tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from aiohttp import web

from services.api.http.app_keys import SETTINGS
from services.api.security.roles import Role
from shared.settings import Settings

SESSION_COOKIE = "eventjobs_session"
SESSION_SECONDS = 12 * 3600
SESSION_KEY = web.AppKey("session_key", bytes)


def install(app: web.Application) -> None:
    """The key that signs sessions and CSRF tokens: SESSION_SECRET, or a random one for this process."""
    secret = app[SETTINGS].session_secret
    app[SESSION_KEY] = hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mac(key: bytes, purpose: str, value: str) -> str:
    """HMAC-SHA256 of `value` for one `purpose` (a session, a CSRF token, a token fingerprint), base64url."""
    return _b64(hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest())


def token_fingerprint(key: bytes, token: str) -> str:
    """Stored in the session, so rotating a token ends the sessions opened with the old one."""
    return mac(key, "token", token)[:22]


def sign_session(key: bytes, role: Role, fingerprint: str, expires: float) -> str:
    payload = _b64(json.dumps({"r": role.value, "t": fingerprint, "e": int(expires)}).encode())
    return f"{payload}.{mac(key, 'session', payload)}"


def read_session(key: bytes, value: str, now: float) -> tuple[Role, str] | None:
    """(role, token fingerprint) of a cookie this process family signed and that has not expired."""
    payload, _, signature = value.partition(".")
    if not payload or not hmac.compare_digest(signature.encode(), mac(key, "session", payload).encode()):
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


def session_cookie_for(request: web.Request, role: Role, token: str) -> str:
    key = request.app[SESSION_KEY]
    return sign_session(key, role, token_fingerprint(key, token), time.time() + SESSION_SECONDS)


def set_session(response: web.StreamResponse, request: web.Request, value: str) -> None:
    response.set_cookie(SESSION_COOKIE, value, path="/", max_age=SESSION_SECONDS, httponly=True,
                        samesite="Strict", secure=request.secure)


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")
