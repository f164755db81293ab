"""What each job kind is, as data: for `GET /api/kinds`, the README's table and the CLI.

One description, generated from the declarations in `shared/kinds.py`, so the documentation cannot
drift from the code (a test compares the README's table with `markdown_table`).
"""

from __future__ import annotations

from typing import Any

from shared.registry import JobKind, Registry
from shared.retry import RetryPolicy


def describe(kind: JobKind, default_retry: RetryPolicy | None) -> dict[str, Any]:
    """One kind as JSON; `retry` is the policy in force (the settings' default when the kind has none)."""
    policy = kind.retry or default_retry
    return {
        "kind": kind.name,
        "queue_class": kind.queue.value,
        "service": kind.service,
        "rabbitmq_queue": f"jobs.{kind.service}",
        "timeout_seconds": kind.timeout_seconds,
        "retry": None if policy is None else {"max_attempts": policy.max_attempts, "delays": list(policy.delays)},
        "uses_default_retry": kind.retry is None,
        "args_schema": kind.args_model.model_json_schema(),
        "example_args": example_args(kind),
    }


def catalog(registry: Registry, default_retry: RetryPolicy | None = None) -> list[dict[str, Any]]:
    return [describe(kind, default_retry) for kind in sorted(registry, key=lambda kind: kind.name)]


# Arguments that pass validation, for the docs, Swagger's "Try it out" and the CLI's help.
_EXAMPLE_VALUES: dict[str, Any] = {
    "email": "ada@example.com",
    "to": "ada@example.com",
    "name": "Ada Lovelace",
    "subject": "Hello",
    "event_id": "00000000-0000-4000-8000-000000000001",
    "participant_id": "00000000-0000-4000-8000-000000000002",
}


# Optional fields an example needs to run, not only to be accepted: the `plain` template renders `body`.
_EXAMPLE_EXTRAS: dict[str, dict[str, Any]] = {
    "email.send": {"context": {"body": "Doors open at 18:00."}},
}


def example_args(kind: JobKind) -> dict[str, Any]:
    """Values for the required fields (optional ones have defaults), plus what the kind needs to succeed."""
    required = kind.args_model.model_json_schema().get("required", [])
    return {**{name: _EXAMPLE_VALUES.get(name, "example") for name in required},
            **_EXAMPLE_EXTRAS.get(kind.name, {})}


def _arguments_cell(schema: dict[str, Any]) -> str:
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return "none"
    required = set(schema.get("required", []))
    cells = []
    for name, prop in properties.items():
        type_name = _type_name(prop)
        cells.append(f"`{name}`: {type_name}" + ("" if name in required else " (optional)"))
    return ", ".join(cells)


def _type_name(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        names = [_type_name(option) for option in prop["anyOf"] if option.get("type") != "null"]
        return " or ".join(names)
    if prop.get("format") in ("uuid", "date-time"):
        return str(prop["format"])
    return str(prop.get("type", "any"))


def markdown_table(registry: Registry) -> str:
    """The README's job-kind table (`python -m scripts.kinds_table` prints it)."""
    lines = [
        "| kind | queue class | service (RabbitMQ queue) | arguments | retry policy | timeout |",
        "|---|---|---|---|---|---|",
    ]
    for kind in sorted(registry, key=lambda kind: kind.name):
        retry = ("default (`RETRY_ATTEMPTS`, `RETRY_DELAYS`)" if kind.retry is None else
                 f"{kind.retry.max_attempts} attempts, delays {', '.join(map(str, kind.retry.delays))} s")
        lines.append(
            f"| `{kind.name}` | {kind.queue.value} | {kind.service} (`jobs.{kind.service}`) | "
            f"{_arguments_cell(kind.args_model.model_json_schema())} | {retry} | {kind.timeout_seconds:g} s |"
        )
    return "\n".join(lines) + "\n"
