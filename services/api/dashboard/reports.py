"""/jobs/reports: the stored daily reports of the last two weeks, as GET /api/reports has them."""

from __future__ import annotations

from aiohttp import web

from services.api.dashboard.render import render
from services.api.http.app_keys import RUNTIME
from services.api.routes.reports import recent_reports

routes = web.RouteTableDef()


@routes.get("/jobs/reports")
async def reports_page(request: web.Request) -> web.Response:
    reports = await recent_reports(request.app[RUNTIME].pool, 14)
    return render(request, "reports.html", nav="reports", reports=reports)
