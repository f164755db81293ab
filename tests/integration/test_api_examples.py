"""Every request body example of the OpenAPI document (Swagger UI's "Try it out") is accepted as it stands."""

from __future__ import annotations

import re
from typing import Any

from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment

# Which operation comes first where one example needs what another makes (an event before its participants).
ORDER = ("/api/events", "/api/recurring/{recurring_id}")


async def test_every_request_example_in_the_openapi_document_is_accepted(env: TestEnvironment) -> None:
    async with platform_api(env) as api:
        document: dict[str, Any] = await (await api.get("/api/openapi.json")).json()
        examples = [
            (path, method, operation["requestBody"]["content"]["application/json"]["example"])
            for path, operations in document["paths"].items()
            for method, operation in operations.items()
            if "example" in operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        ]
        # Creating methods first on a path: the PUT of a recurring job before its PATCH.
        examples.sort(key=lambda item: (ORDER.index(item[0]) if item[0] in ORDER else len(ORDER), item[0],
                                        ("put", "post", "patch").index(item[1])))
        assert len(examples) >= 10, [path for path, _, _ in examples]

        made: dict[str, str] = {"recurring_id": "swagger-example"}
        answers = {}
        for path, method, body in examples:
            url = re.sub(r"\{(\w+)\}", lambda match: made[match.group(1)], path)
            response = await api.request(method.upper(), url, json=body)
            answers[f"{method.upper()} {path}"] = response.status
            assert response.status < 400, f"{method.upper()} {path} refused its own example: {await response.text()}"
            if path == "/api/events" and method == "post":
                made["event_id"] = (await response.json())["id"]
        print(answers)
