"""Every POST of the dashboard: job actions, bulk actions, recurring jobs, login and logout.

The auth middleware (services/api/security/) has already checked the Origin, the CSRF token and the role
before any of these run.
Each action answers 303 to a page (post/redirect/get), so a reload never repeats it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

from aiohttp import web
from pydantic import ValidationError

from services.api.dashboard.filters import parse_filter
from services.api.dashboard.render import render_login, safe_next
from services.api.dashboard.system import NEW_RECURRING, render_recurring
from services.api.http.app_keys import RUNTIME, SETTINGS
from services.api.http.errors import ApiError, refused
from services.api.http.parsing import path_uuid
from services.api.openapi.schemas import RecurringPut
from services.api.operations import recurring
from services.api.security import ratelimit, roles, sessions
from shared import job_actions
from shared.runtime import Runtime

routes = web.RouteTableDef()
REASON = "from the dashboard"


def see_other(path: str, **query: str) -> web.Response:
    return web.Response(status=303, headers={"Location": f"{path}?{urlencode(query)}" if query else path})


async def _act(
    request: web.Request, action: Callable[[Runtime, uuid.UUID, str], Awaitable[object]], done: str, reason: str
) -> web.Response:
    """Run an operator action on the job in the path, then back to its page with the notice `done`."""
    job_id = path_uuid(request, "job_id", "job")
    try:
        await action(request.app[RUNTIME], job_id, f"{reason} {REASON}")
    except job_actions.ActionRefused as error:
        raise refused(error) from None
    return see_other(f"/jobs/job/{job_id}", done=done)


@routes.post("/jobs/job/{job_id}/requeue")
async def requeue(request: web.Request) -> web.StreamResponse:
    return await _act(request, job_actions.requeue_job, "requeued", reason="requeued")


@routes.post("/jobs/job/{job_id}/delete")
async def delete(request: web.Request) -> web.StreamResponse:
    return await _act(request, job_actions.delete_job, "deleted", reason="deleted")


@routes.post("/jobs/job/{job_id}/cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    who = roles.actor(request)
    return await _act(request, lambda runtime, job_id, reason: job_actions.cancel_job(runtime, job_id, who, reason),
                      "cancelled", reason="cancelled")


@routes.post("/jobs/job/{job_id}/enqueue")
async def enqueue_now(request: web.Request) -> web.StreamResponse:
    return await _act(request, job_actions.enqueue_now, "enqueued", reason="enqueued now")


def selected_ids(values: list[str]) -> list[uuid.UUID]:
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            raise ApiError(422, "validation_error", f"not a job id: {value!r}") from None
    return ids


# action → (on ids, on a filter, the reason's verb)
BULK_ACTIONS: dict[str, tuple[Callable[..., Awaitable[job_actions.BulkResult]],
                              Callable[..., Awaitable[job_actions.BulkResult]], str]] = {
    "requeue": (job_actions.requeue_jobs, job_actions.requeue_matching, "requeued"),
    "delete": (job_actions.delete_jobs, job_actions.delete_matching, "deleted"),
    "enqueue": (job_actions.enqueue_now_jobs, job_actions.enqueue_now_matching, "enqueued now"),
}


@routes.post("/jobs/bulk")
async def bulk(request: web.Request) -> web.StreamResponse:
    """Requeue, delete or cancel the ticked jobs, or every job matching the list's filter (which must name a state)."""
    form = await request.post()
    runtime = request.app[RUNTIME]
    action, _, scope = str(form.get("do", "")).partition("-")
    who = roles.actor(request)
    # Cancel records who asked, so its entry is made per request.
    actions: dict[str, tuple[Callable[..., Awaitable[job_actions.BulkResult]],
                             Callable[..., Awaitable[job_actions.BulkResult]], str]] = {
        **BULK_ACTIONS,
        "cancel": (lambda runtime, ids, reason: job_actions.cancel_jobs(runtime, ids, who, reason),
                   lambda runtime, job_filter, reason: job_actions.cancel_matching(runtime, job_filter, who,
                                                                                  reason=reason),
                   "cancelled"),
    }
    if action not in actions or scope not in ("selected", "matching"):
        raise ApiError(422, "validation_error",
                       "choose requeue, delete, enqueue or cancel, on the selected or all matching jobs")
    parsed = parse_filter({name: str(value) for name, value in form.items()}, datetime.now(UTC))
    if parsed.errors:
        raise ApiError(422, "validation_error", "; ".join(f"{name}: {msg}" for name, msg in parsed.errors.items()))
    if scope == "selected":
        ids = selected_ids([str(value) for value in form.getall("id", [])])
        if not ids:
            raise ApiError(422, "validation_error", "no job selected: tick the jobs first")
        result = await actions[action][0](runtime, ids, f"{actions[action][2]} {REASON}")
    else:
        if parsed.job_filter.state is None:
            raise ApiError(422, "validation_error", "a bulk action on all matching jobs needs a state filter")
        result = await actions[action][1](runtime, parsed.job_filter, reason=f"{actions[action][2]} {REASON}")
    return see_other(f"/jobs/list?{parsed.query(done='bulk', n=str(len(result.changed)))}")


@routes.post("/jobs/recurring/{recurring_id}/trigger")
async def trigger(request: web.Request) -> web.StreamResponse:
    recurring_id = request.match_info["recurring_id"]
    await recurring.trigger_recurring(request.app[RUNTIME], recurring_id)
    return see_other("/jobs/recurring", done="triggered")


@routes.post("/jobs/recurring/{recurring_id}/pause")
async def pause(request: web.Request) -> web.StreamResponse:
    await recurring.set_recurring_enabled(request.app[RUNTIME], request.match_info["recurring_id"], False)
    return see_other("/jobs/recurring", done="paused")


@routes.post("/jobs/recurring/{recurring_id}/resume")
async def resume(request: web.Request) -> web.StreamResponse:
    await recurring.set_recurring_enabled(request.app[RUNTIME], request.match_info["recurring_id"], True)
    return see_other("/jobs/recurring", done="resumed")


@routes.post("/jobs/recurring/{recurring_id}/edit")
async def edit(request: web.Request) -> web.StreamResponse:
    """Save cron and time zone; a bad value re-renders the form with the message beside its field."""
    recurring_id = request.match_info["recurring_id"]
    form = await request.post()
    values = {"cron": str(form.get("cron", "")).strip(), "timezone": str(form.get("timezone", "")).strip()}
    errors = {name: "is required" for name, value in values.items() if not value}
    if not errors:
        try:
            await recurring.update_recurring(request.app[RUNTIME], recurring_id, cron=values["cron"],
                                             timezone=values["timezone"])
        except ApiError as error:
            if error.status != 422:
                raise
            details = error.details if isinstance(error.details, list) else []
            errors = {str(item.get("field")): str(item.get("message")) for item in details} or {"cron": error.message}
    if errors:
        return await render_recurring(request, status=422, editing=recurring_id, form=values, errors=errors)
    return see_other("/jobs/recurring", done="saved")


@routes.post("/jobs/recurring/new")
async def create_recurring(request: web.Request) -> web.StreamResponse:
    """Create or replace a definition; a bad value re-renders the form with the message beside its field."""
    form = await request.post()
    names = ("id", "kind", "args", "cron", "timezone", "misfire_policy", "queue")
    values = {name: str(form.get(name, "")).strip() for name in names}
    errors: dict[str, str] = {}
    try:
        args = json.loads(values["args"] or "{}")
        definition = RecurringPut.model_validate({
            "kind": values["kind"], "args": args, "cron": values["cron"], "timezone": values["timezone"] or "UTC",
            "misfire_policy": values["misfire_policy"] or "fire_once", "queue": values["queue"] or None,
        })
        await recurring.put_recurring(request.app[RUNTIME], values["id"], definition)
    except json.JSONDecodeError as exc:
        errors = {"args": f"not JSON: {exc.msg}"}
    except ValidationError as exc:
        errors = {str(item["loc"][0]) if item["loc"] else "id": item["msg"] for item in exc.errors()}
    except ApiError as error:
        if error.status != 422:
            raise
        details = error.details if isinstance(error.details, list) else []
        errors = {str(item.get("field")).split(".")[0].replace("recurring_id", "id"): str(item.get("message"))
                  for item in details} or {"id": error.message}
    if errors:
        return await render_recurring(request, status=422, editing=NEW_RECURRING, form=values, errors=errors)
    return see_other("/jobs/recurring", done="created")


@routes.post("/jobs/recurring/{recurring_id}/delete")
async def delete_recurring(request: web.Request) -> web.StreamResponse:
    await recurring.delete_recurring(request.app[RUNTIME], request.match_info["recurring_id"])
    return see_other("/jobs/recurring", done="recurring_deleted")


@routes.post("/jobs/login")
async def login(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    wait = ratelimit.limits(request).login_client.take(ratelimit.client_address(request))
    if wait is not None:  # token guessing: every attempt counts, right or wrong
        refused = ratelimit.RateLimited(wait, "client", "too many login attempts from this address")
        response = render_login(request, status=429, next_path="/jobs", error=refused.message)
        response.headers.update(refused.headers)
        return response
    form = await request.post()
    next_path = safe_next(str(form.get("next", "/jobs")))
    token = str(form.get("token", ""))
    role = roles.role_for_token(settings, token)
    if role is None:
        return render_login(request, status=401, next_path=next_path, error="That token is not valid.")
    response = see_other(next_path)
    sessions.set_session(response, request, sessions.session_cookie_for(request, role, token))
    return response


@routes.post("/jobs/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    login = roles.tokens_configured(request.app[SETTINGS])
    response = see_other("/jobs/login" if login else "/jobs", done="logged_out")
    sessions.clear_session(response)
    return response
