"""Pydantic validation errors as one line of the contract's error message."""

from __future__ import annotations

from pydantic import ValidationError


def describe(error: ValidationError, *, limit: int = 3) -> str:
    """The offending fields and what is wrong with each, never echoing the caller's input: an unknown
    key is caller text too (possibly private), so its place is named, not the key itself."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:limit]:
        if item["type"] == "json_invalid":
            return "body: malformed JSON"
        if item["type"] == "extra_forbidden":
            parts.append(f"{field_path(item['loc'][:-1]) or 'body'}: unknown field")
            continue
        field = field_path(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "model_type":
            message = f"{field or 'body'}: must be a JSON object"
        elif field:
            message = f"{field}: {message}"
        # a model-level rule's message already starts with the field it is about
        parts.append(message)
    return "; ".join(parts)


def field_path(loc: tuple) -> str:
    """`("conversation", 2, "content")` as `conversation[2].content`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
