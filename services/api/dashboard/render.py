"""Rendering dashboard pages: one Jinja2 environment (autoescape on), the context every page shares."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.api.dashboard import formatting as fmt
from services.api.http.app_keys import SETTINGS
from services.api.http.errors import ApiError, Handler
from services.api.security.access import LOGIN_PATH
from services.api.security.csrf import CSRF_FIELD, CSRF_TOKEN
from services.api.security.roles import principal_of, tokens_configured
from shared.jobs import JobState
from shared.rabbitmq_management import management_ui_url

TEMPLATES = Path(__file__).parent / "templates"

# No inline script or style may run: the pages' own JS and CSS are files under /jobs/static/.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

STATE_ORDER = [JobState.ENQUEUED, JobState.SCHEDULED, JobState.PROCESSING, JobState.RETRYING,
               JobState.SUCCEEDED, JobState.FAILED, JobState.DELETED, JobState.CANCELLED, JobState.AWAITING,
               JobState.SKIPPED]

# Messages shown after an action redirects back; the query carries a code, never the text itself.
NOTICES = {
    "requeued": "Job requeued.",
    "deleted": "Job deleted.",
    "cancelled": "Job cancelled; a running handler stops within a heartbeat.",
    "enqueued": "Scheduled job enqueued now.",
    "triggered": "Recurring job triggered.",
    "paused": "Recurring job paused.",
    "resumed": "Recurring job resumed.",
    "saved": "Schedule saved.",
    "created": "Recurring job saved; the scheduler has it now.",
    "recurring_deleted": "Recurring job deleted; it will not fire again.",
    "bulk": "Bulk action done.",
    "purged": "Removed from the parking lot; no job was changed.",
    "logged_out": "Logged out.",
}


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(
        duration=fmt.duration, pretty_json=fmt.pretty_json, compact_json=fmt.compact_json, redact=fmt.redact,
        redact_payload=fmt.redact_payload,
        dt=lambda value: value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "—",
        iso=lambda value: value.astimezone(UTC).isoformat() if value else "",
        short_id=lambda value: str(value)[:8],
    )
    return env


def common_context(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    principal = principal_of(request)
    now = datetime.now(UTC)
    notice = NOTICES.get(request.query.get("done", ""))
    count = request.query.get("n")
    if notice and count and count.isdigit():
        noun = "message" if request.query.get("done") == "purged" else "job"
        notice = f"{notice} ({count} {noun}{'' if count == '1' else 's'})"
    return {
        "csrf_field": CSRF_FIELD,
        "csrf_token": request.get(CSRF_TOKEN, ""),
        "principal": principal,
        "read_only": bool(principal is None or principal.read_only or settings.dashboard_read_only),
        "can_log_out": principal is not None and principal.via == "session",
        "rabbitmq_ui": management_ui_url(settings.rabbitmq_management_url),
        "now": now,
        "ago": lambda moment: fmt.relative(moment, now),
        "notice": notice,
        "states": [state.value for state in STATE_ORDER],
        "path_qs": request.path_qs,
    }


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    html = environment().get_template(template).render({**common_context(request), **context})
    return web.Response(text=html, status=status, content_type="text/html", headers=SECURITY_HEADERS)


def render_login(request: web.Request, *, status: int = 200, next_path: str = "/jobs",
                 error: str | None = None) -> web.Response:
    return render(request, "login.html", status=status, next_path=safe_next(next_path), error=error,
                  login_path=LOGIN_PATH, tokens=tokens_configured(request.app[SETTINGS]))


def refusal_page(request: web.Request, status: int, message: str, login: bool) -> web.Response:
    """What the auth middleware shows a dashboard request it refuses (security/auth.py's REFUSAL_PAGE)."""
    if login:
        return render_login(request, status=401, next_path=request.path_qs)
    return render_message(request, status, message)


def render_message(request: web.Request, status: int, message: str) -> web.Response:
    titles = {401: "Not signed in", 403: "Not allowed", 404: "Not found", 405: "Method not allowed",
              422: "Invalid input"}
    return render(request, "message.html", status=status, title=titles.get(status, "Error"), message=message)


def safe_next(path: str) -> str:
    """Only a dashboard path of this site: a login must never redirect to another origin."""
    if path.startswith("/jobs") and not path.startswith("//") and "\\" not in path and LOGIN_PATH not in path:
        return path
    return "/jobs"


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors under /jobs are pages, not the API's JSON."""
    if not request.path.startswith("/jobs"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as error:
        return render_message(request, error.status, error.message)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return render_message(request, error.status, error.reason)
