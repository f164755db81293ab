"""Which requests need a caller, and which writes a read-only caller is refused.

Operator prefixes (the job API, the system views, the dashboard) always need one. Besides them, single platform
operations are operator-only (participant lists, creating, moving and cancelling events): their routes say so
(`ApiRoutes(..., operator=True)`) and the app hands the set to this package under OPERATOR_ROUTES.
"""

from __future__ import annotations

from aiohttp import web

from services.api.security.roles import Principal
from shared.settings import Settings

PROTECTED_PREFIXES = ("/api/jobs", "/api/recurring", "/api/servers", "/api/queues", "/api/stats", "/jobs")
DASHBOARD = "/jobs"
LOGIN_PATH = "/jobs/login"
LOGOUT_PATH = "/jobs/logout"
STATIC_PREFIX = "/jobs/static/"
# The client write path (enqueue) is not an operator action: DASHBOARD_READ_ONLY leaves it to operators.
ENQUEUE_PATHS = ("/api/jobs", "/api/jobs/batch")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# (method, route pattern) of the operations outside PROTECTED_PREFIXES that need an operator or read-only caller.
OPERATOR_ROUTES = web.AppKey("operator_routes", frozenset[tuple[str, str]])


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


def refused_read_only(principal: Principal, settings: Settings, method: str, path: str) -> bool:
    """Read-only callers may change nothing; DASHBOARD_READ_ONLY closes the operator actions, not the
    platform's own writes (enqueueing, events), which are what the services exist for."""
    if method in SAFE_METHODS or path in (LOGIN_PATH, LOGOUT_PATH):
        return False
    if principal.read_only:
        return True
    return settings.dashboard_read_only and is_action(method, path) and path not in ENQUEUE_PATHS
