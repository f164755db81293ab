"""Validation messages written for people: one sentence per bad field, from pydantic's error items.

Pydantic's own text ("Value error, is not an email address", "Input should have timezone info") names
its internals; these say what the field must be, with an example where the form is not obvious.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

TIME_EXAMPLE = "2031-05-01T18:00:00+02:00"
# Fields people often guess wrong, and the one they meant.
DID_YOU_MEAN = {"delay": "delay_seconds", "run_in": "delay_seconds", "arguments": "args", "type": "kind",
                "start": "starts_at", "start_time": "starts_at", "end": "ends_at", "priority": "queue"}


def _limit(ctx: Mapping[str, Any], name: str) -> Any:
    return ctx.get(name, "?")


def human_message(item: Mapping[str, Any]) -> str:
    """What is wrong with one field, in words."""
    kind: str = item.get("type", "")
    ctx: Mapping[str, Any] = item.get("ctx") or {}
    msg: str = str(item.get("msg", "is not valid"))
    loc = item.get("loc") or ()
    field = str(loc[-1]) if loc else ""
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        hint = DID_YOU_MEAN.get(field)
        return "is not a field of this request" + (f"; did you mean {hint}?" if hint else "")
    if kind == "timezone_aware":
        return f"must include a UTC offset or Z, like {TIME_EXAMPLE}"
    if kind in ("datetime_parsing", "datetime_from_date_parsing", "datetime_type"):
        return f"must be a date and time with a UTC offset, like {TIME_EXAMPLE}"
    if kind == "string_too_short":
        minimum = _limit(ctx, "min_length")
        return "must not be empty" if minimum == 1 else f"must be at least {minimum} characters"
    if kind == "string_too_long":
        return f"must be at most {_limit(ctx, 'max_length')} characters"
    if kind in ("too_short", "too_long"):
        bound = "at least" if kind == "too_short" else "at most"
        count = _limit(ctx, "min_length" if kind == "too_short" else "max_length")
        return f"must have {bound} {count} items"
    if kind == "string_type":
        return "must be text (a JSON string)"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {_limit(ctx, key)}"
    if kind in ("enum", "literal_error"):
        return f"must be one of {_limit(ctx, 'expected')}"
    if kind in ("uuid_parsing", "uuid_type"):
        return "must be a UUID, like 3f2b8c1e-5d4a-4c3b-9e8f-0a1b2c3d4e5f"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a JSON object"
    if kind == "list_type":
        return "must be a list"
    if kind == "string_pattern_mismatch":
        return "contains characters that are not allowed here"
    if kind == "value_error":
        text = msg.removeprefix("Value error, ")
        if text == "is not an email address":
            return "must be an email address, like ada@example.com"
        return text
    return msg


def field_messages(items: Iterable[Mapping[str, Any]], prefix: str = "", whole: str = "body") -> list[dict[str, str]]:
    """One {"field", "message"} per bad field, every bad field, in the order they were found.

    A union (a value that may be one of several types) yields one error per member for the same field;
    only the first is kept, so a person reads one sentence per field. An error about the whole value
    (no location) is named `whole`.
    """
    details: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in items:
        parts = [str(part) for part in item.get("loc") or ()]
        name = ".".join(parts)
        field = f"{prefix}{name}" if name else prefix.rstrip(".") or whole
        if field in seen:
            continue
        seen.add(field)
        details.append({"field": field, "message": human_message(item)})
    return details
