"""Swagger UI at /api/docs, from assets shipped in the package (swagger/ beside this file), never a CDN."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.api.openapi.route_table import ApiRoutes

routes = ApiRoutes("docs")  # no operations: the docs page is not part of the API it documents

ASSETS = Path(__file__).resolve().parent / "swagger"
ASSETS_URL = "/api/docs/assets"

PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>eventjobs API</title>
  <link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">
  <link rel="icon" href="/jobs/static/favicon.svg" type="image/svg+xml">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>
  <script src="{ASSETS_URL}/docs-init.js"></script>
</body>
</html>
"""


@routes.table.get("/api/docs")
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


routes.table.static(ASSETS_URL, ASSETS, append_version=False)
