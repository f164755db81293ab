"""The api application on a real TCP port, and a browser-like HTTP client for its dashboard forms."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from services.api.app import create_app
from shared.registry import Registry
from shared.settings import Settings

_CSRF = re.compile(r'name="(?:csrf_token" value|csrf-token" content)="([^"]+)"')


@asynccontextmanager
async def running_api(settings: Settings, registry: Registry, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Serve create_app(settings) on `host` and a free port; yields the port."""
    runner = web.AppRunner(create_app(settings, registry=registry), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    try:
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the route to the outside), if it has one."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.255", 9))  # UDP connect sends nothing; it only picks the interface
        address: str = probe.getsockname()[0]
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for address in subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split():
            if "." in address and not address.startswith("127."):
                return address
    return None


def csrf_from(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def browser_session(**headers: str) -> aiohttp.ClientSession:
    """A client that keeps cookies for IP hosts and does not follow redirects unless asked."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers)
