"""`POST /route` request: its model (docs/api.md) and parsing into contract errors."""

from __future__ import annotations

import base64
import binascii
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from taskrouter.core.validation import describe

from taskrouter.core.errors import InvalidRequest, RequestTooLarge

MAX_BODY_BYTES = 64 * 1024
MAX_MESSAGES = 50  # a conversation's messages
MAX_CONTENT_CHARS = 4000  # a message's characters


class Strategy(str, Enum):
    ZERO_SHOT = "zero_shot"
    FEW_SHOT_COT = "few_shot_cot"
    REACT = "react"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    role: Literal["user", "assistant"]
    content: Annotated[str, Field(min_length=1, max_length=MAX_CONTENT_CHARS)]


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    conversation: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    current_task: str | None = None  # absent: none (docs/api.md)
    tasks: list[str] | None = None
    strategy: Strategy | None = None

    @model_validator(mode="after")
    def _last_message_is_users(self) -> RouteRequest:
        if self.conversation[-1].role != "user":
            raise ValueError("conversation: the last message must have role 'user'")
        return self


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
        raise InvalidRequest(describe(error)) from None
