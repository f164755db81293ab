"""The OpenAPI 3.1 document, built from the operations the route tables recorded (route_table.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from services.api.openapi.route_table import Operation

_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_REF = re.compile(r'"#/components/schemas/(\w+)"')


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorBody


def openapi_document(
    operations: Iterable[Operation], *, title: str, version: str, needs_auth: Callable[[Operation], bool] | None = None,
    examples: Mapping[str, Any] | None = None, kinds: Sequence[str] = (),
) -> dict[str, Any]:
    """`needs_auth` says which operations take the bearer token (default: those marked `operator`);
    `examples` are request bodies by model name, shown as each body's `example`; `kinds`, the declared job
    kinds, become the enum of every `kind` a request sends (never of a response: a job of a kind since
    removed is still shown)."""
    operations = list(operations)
    models: set[type[BaseModel]] = {ErrorOut}
    for operation in operations:
        models.update(model for model in (operation.body, operation.query) if model is not None)
        models.update(model for model in operation.responses.values() if model is not None)
    keyed: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (model, "validation") for model in sorted(models, key=lambda model: model.__name__)
    ]
    _, definitions = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
    schemas = definitions.get("$defs", {})
    if kinds:
        requests = {model.__name__ for operation in operations for model in (operation.body, operation.query) if model}
        answers = {model.__name__ for operation in operations for model in operation.responses.values() if model}
        answers.add(ErrorOut.__name__)
        for name in _reachable(schemas, requests) - _reachable(schemas, answers):
            _enumerate_kind(schemas[name], sorted(kinds))

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        path = _PATH_PARAM.sub(r"{\1}", operation.path)
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True,
             "schema": operation.path_schemas.get(name, {"type": "string"})}
            for name in _PATH_PARAM.findall(operation.path)
        ]
        parameters += [
            {"name": header.name, "in": "header", "required": False, "description": header.description,
             "schema": {"type": "string", "minLength": 1, "maxLength": header.max_length}}
            for header in operation.headers
        ]
        if operation.query is not None:
            query_schema = schemas[operation.query.__name__]
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        responses: dict[str, Any] = {}
        for status, model in operation.responses.items():
            entry: dict[str, Any] = {"description": _reason(status)}
            if model is not None:
                entry["content"] = {operation.content_type: {"schema": ref(model)}}
            responses[str(status)] = entry
        for status in operation.error_statuses():
            responses[str(status)] = {"description": _reason(status),
                                      "content": {"application/json": {"schema": ref(ErrorOut)}}}
            if status == 429:
                responses[str(status)]["headers"] = {"Retry-After": {
                    "description": "seconds until a request would be allowed", "schema": {"type": "integer"}}}
        spec: dict[str, Any] = {"summary": operation.summary, "tags": [operation.tag],
                                "operationId": _operation_id(operation), "responses": responses}
        if operation.operator or (needs_auth is not None and needs_auth(operation)):
            spec["security"] = [{"bearer": []}]
        if parameters:
            spec["parameters"] = parameters
        if operation.body is not None:
            media: dict[str, Any] = {"schema": ref(operation.body)}
            if examples is not None and operation.body.__name__ in examples:
                media["example"] = examples[operation.body.__name__]
            spec["requestBody"] = {"required": True, "content": {"application/json": media}}
        paths.setdefault(path, {})[operation.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _reachable(schemas: Mapping[str, Any], roots: Iterable[str]) -> set[str]:
    """The component schemas `roots` refer to, directly or through others, and the roots themselves."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        todo.extend(_REF.findall(json.dumps(schemas[name])))
    return seen


def _enumerate_kind(schema: dict[str, Any], kinds: list[str]) -> None:
    prop = schema.get("properties", {}).get("kind")
    if prop is None:
        return
    for option in [prop, *prop.get("anyOf", [])]:
        if option.get("type") == "string" and "enum" not in option:
            option["enum"] = kinds


def _reason(status: int) -> str:
    return HTTPStatus(status).phrase


def _operation_id(operation: Operation) -> str:
    words = re.sub(r"[^a-zA-Z0-9]+", "_", operation.path).strip("_")
    return f"{operation.method.lower()}_{words}"
