"""How an answer held to a JSON schema is asked of an OpenAI-compatible server: the one place that
builds the request's `response_format`, for the fallback, `data generate` and the teacher alike.

Servers speak one of two dialects. OpenAI's (and Ollama's, vLLM's, llama.cpp's `llama-server`):
`{"type": "json_schema", "json_schema": {"name", "strict", "schema"}}`. llama-cpp-python's server
(`python -m llama_cpp.server`, 0.3.x) takes only `text` or `json_object`, the latter with an optional
`schema` it enforces by grammar (llama_cpp/llama_types.py `ChatCompletionRequestResponseFormat`,
llama_chat_format.py `_grammar_for_response_format`). It answers json_schema with HTTP 500: FastAPI's
validation error reaches its RouteErrorHandler (llama_cpp/server/errors.py:170-210), which wraps every
exception but an HTTPException as a 500 `internal_server_error` whose message is the validation
error, naming `('body', 'response_format', 'type')` and `Input should be 'text' or 'json_object'`.

`auto` sends json_schema and switches to json_object on such a refusal, for the rest of the process.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

Answer = TypeVar("Answer")
ResponseFormatField = dict[str, Any]


class ResponseFormat(enum.StrEnum):
    """TASKROUTER_OPENAI_RESPONSE_FORMAT's values."""

    JSON_SCHEMA = "json_schema"  # OpenAI's structured output
    JSON_OBJECT = "json_object"  # with `schema`, as llama-cpp-python's server takes it
    AUTO = "auto"  # json_schema until the server refuses it by name, then json_object


# A server that reads the body and refuses the field: 400 (the usual invalid request), 422 (FastAPI's
# own validation answer), 500 (llama-cpp-python wraps that validation error as an internal error).
# Never 401/403/404/429, nor a gateway's 502-504: they say nothing of the request's fields.
_REFUSAL_STATUSES = frozenset({400, 422, 500})


def refuses_response_format(error: BaseException) -> bool:
    """Whether `error` is an HTTP answer (the `openai` client's APIStatusError) refusing the request's
    `response_format`: a refusal status whose error message names the field."""
    if getattr(error, "status_code", None) not in _REFUSAL_STATUSES:
        return False
    return "response_format" in _error_message(getattr(error, "body", None))


def _error_message(body: object) -> str:
    """The error's own words: the OpenAI-style error object's `message` (the client keeps the body's
    `error` member), else the whole body (FastAPI's `detail`, a plain-text answer)."""
    if isinstance(body, dict):
        message = body.get("message")
        return message if isinstance(message, str) else json.dumps(body, default=str)
    return body if isinstance(body, str) else ""


def response_format(dialect: ResponseFormat, name: str, schema: dict[str, Any]) -> ResponseFormatField:
    """The request's `response_format` holding an answer to `schema` (the same strict schema in both
    dialects); `name` is the schema's name in OpenAI's."""
    if dialect is ResponseFormat.JSON_OBJECT:
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


class StructuredOutput:
    """The dialect a process speaks to its server, learnt once under `auto`.

    `create` (a blocking client) and `acreate` (asyncio) take the call to make, given the
    `response_format` to send. Under `auto`, a refusal naming `response_format` is answered by the
    same call in json_object, and the switch is kept unless that call is refused the same way (then
    the server takes neither, and the next call asks in json_schema again)."""

    def __init__(self, setting: ResponseFormat = ResponseFormat.JSON_SCHEMA) -> None:
        self.setting = setting
        self._switched = threading.Event()  # set once: every thread, and the event loop, see it

    @property
    def dialect(self) -> ResponseFormat:
        """The dialect the next request is sent in: json_schema or json_object."""
        if self.setting is ResponseFormat.JSON_OBJECT or self._switched.is_set():
            return ResponseFormat.JSON_OBJECT
        return ResponseFormat.JSON_SCHEMA

    def create(self, call: Callable[[ResponseFormatField], Answer], name: str, schema: dict[str, Any]) -> Answer:
        dialect = self.dialect
        try:
            return call(response_format(dialect, name, schema))
        except Exception as error:
            if not self._switches_on(error, dialect):
                raise
        try:
            answer = call(response_format(ResponseFormat.JSON_OBJECT, name, schema))
        except Exception as error:
            self._learn(error)
            raise
        self._learn(None)
        return answer

    async def acreate(
        self, call: Callable[[ResponseFormatField], Awaitable[Answer]], name: str, schema: dict[str, Any]
    ) -> Answer:
        dialect = self.dialect
        try:
            return await call(response_format(dialect, name, schema))
        except Exception as error:
            if not self._switches_on(error, dialect):
                raise
        try:
            answer = await call(response_format(ResponseFormat.JSON_OBJECT, name, schema))
        except Exception as error:
            self._learn(error)
            raise
        self._learn(None)
        return answer

    def _switches_on(self, error: BaseException, sent: ResponseFormat) -> bool:
        return (
            self.setting is ResponseFormat.AUTO and sent is ResponseFormat.JSON_SCHEMA
            and refuses_response_format(error)
        )  # fmt: skip

    def _learn(self, json_object_error: BaseException | None) -> None:
        """After json_object was tried: kept unless it too was refused by name (a timeout or a
        server error says nothing against the dialect)."""
        if json_object_error is not None and refuses_response_format(json_object_error):
            return
        if not self._switched.is_set():
            self._switched.set()
            logger.warning(
                "the OpenAI-compatible server refused response_format json_schema: json_object (with the "
                "schema) from now on (TASKROUTER_OPENAI_RESPONSE_FORMAT=auto)"
            )
