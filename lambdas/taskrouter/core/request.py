"""`POST /route` request: its model (CONTRACT section 1) and parsing into contract errors."""

from __future__ import annotations

import base64
import binascii
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from taskrouter.core.errors import InvalidRequest, RequestTooLarge

MAX_BODY_BYTES = 64 * 1024


class Strategy(str, Enum):
    ZERO_SHOT = "zero_shot"
    FEW_SHOT_COT = "few_shot_cot"
    REACT = "react"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    role: Literal["user", "assistant"]
    content: Annotated[str, Field(min_length=1, max_length=4000)]


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    conversation: Annotated[list[Message], Field(min_length=1, max_length=50)]
    current_task: str | None
    tasks: list[str] | None = None
    strategy: Strategy | None = None

    @model_validator(mode="after")
    def _last_message_is_users(self) -> RouteRequest:
        if self.conversation[-1].role != "user":
            raise ValueError("conversation: the last message must have role 'user'")
        return self


def _field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _describe(error: ValidationError) -> str:
    """One line naming the offending field(s), without echoing the (private) input."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:3]:
        if item["type"] == "json_invalid":
            return "body: malformed JSON"
        if item["type"] == "extra_forbidden":
            # The unknown key itself is caller text, possibly private: name where it is, not what.
            parent, model = _field_path(item["loc"][:-1]), RouteRequest if len(item["loc"]) == 1 else Message
            parts.append(f"{parent or 'body'}: unknown field (accepted: {', '.join(model.model_fields)})")
            continue
        field = _field_path(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "model_type":
            message = f"{field or 'body'}: must be a JSON object"
        elif field:
            message = f"{field}: {message}"
        # a model-level rule's message already starts with the field it is about
        parts.append(message)
    return "; ".join(parts)


def decode_body(body: str | None, *, is_base64: bool) -> bytes:
    """The raw request body as bytes, refusing what is absent or over the size limit."""
    if not body:
        raise InvalidRequest("body: a JSON object is required")
    if is_base64:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("body: malformed base64 encoding") from None
    else:
        raw = body.encode("utf-8", errors="surrogatepass")
    if len(raw) > MAX_BODY_BYTES:
        raise RequestTooLarge(f"body: {len(raw)} bytes, over the limit of {MAX_BODY_BYTES}")
    return raw


def parse_route_request(raw: bytes) -> RouteRequest:
    """Validate a `POST /route` body (sized by `decode_body`); every broken rule is an `InvalidRequest`
    naming its field."""
    try:
        return RouteRequest.model_validate_json(raw)
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from None
