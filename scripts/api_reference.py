"""The generated part of docs/api.md: every operation of the OpenAPI document with its example body.

`python -m scripts.api_reference --write` puts it in place; `tests/unit/test_docs.py` checks docs/api.md
holds it, so the reference cannot drift from the served routes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from services.api.app import create_app
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- operations:start (python -m scripts.api_reference) -->", "<!-- operations:end -->"


def document() -> dict[str, Any]:
    """The document the api serves, built without connecting to anything (routes only)."""
    app = create_app(Settings())
    for route in app.router.routes():
        if route.resource is not None and route.resource.canonical == "/api/openapi.json":
            handler = route.handler
            break
    else:  # pragma: no cover
        raise RuntimeError("no /api/openapi.json route")

    async def call() -> str:
        # The handler only returns the document built at startup; it reads nothing from the request.
        return str((await handler(None)).text)

    return json.loads(asyncio.run(call()))  # type: ignore[no-any-return]


def reference(doc: dict[str, Any]) -> str:
    lines = [START, "", "| method | path | what | who |", "|---|---|---|---|"]
    examples: list[str] = []
    for path, item in sorted(doc["paths"].items()):
        for method, operation in item.items():
            who = "operator (bearer token or session)" if operation.get("security") else "anyone"
            lines.append(f"| {method.upper()} | `{path}` | {operation['summary']} | {who} |")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if "example" in body:
                examples += [f"`{method.upper()} {path}`:", "", "```json", json.dumps(body["example"]), "```", ""]
    lines += ["", "### Example bodies", "", "Each is accepted as it stands (the same ones Swagger UI's "
              "\"Try it out\" starts from).", "", *examples, END]
    return "\n".join(lines) + "\n"


def write(path: Path = ROOT / "docs" / "api.md") -> None:
    """Replace the generated part of docs/api.md in place (`python -m scripts.api_reference --write`)."""
    text = path.read_text()
    head, tail = text[:text.index(START)], text[text.index(END) + len(END) + 1:]
    path.write_text(head + reference(document()) + tail)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.stdout.write(reference(document()))
