"""Typed keys for what the api application holds."""

from __future__ import annotations

from aiohttp import web

from shared.runtime import Runtime
from shared.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
