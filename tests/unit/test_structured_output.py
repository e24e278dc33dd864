"""The structured-output request (adapters/structured_output.py): the two dialects' `response_format`
with the same schema, what counts as a refusal naming `response_format`, and `auto`'s switch, learnt
once, with a blocking call and an asyncio one alike."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import openai
import pytest

from taskrouter.adapters.settings import RuntimeSettings, SettingsError, openai_response_format_from_env
from taskrouter.adapters.structured_output import (
    ResponseFormat,
    StructuredOutput,
    refuses_response_format,
    response_format,
)

SCHEMA = {
    "type": "object",
    "properties": {"task": {"type": "string", "enum": ["follow_up_email", "none"]}},
    "required": ["task"],
    "additionalProperties": False,
}
# llama-cpp-python 0.3.36's answer to json_schema, as the real server sent it (tests/integration/servers.py)
LLAMA_CPP_PYTHON_MESSAGE = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
    "'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n"
    '  File "/x/llama_cpp/server/app.py", line 376, in create_chat_completion\n    POST /v1/chat/completions'
)


def status_error(status: int, body: Any) -> openai.APIStatusError:
    """The error the official client raises for an HTTP answer (it keeps the body's `error` member)."""
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    response = httpx2.Response(status, request=request, json={"error": body} if isinstance(body, dict) else body)
    client = openai.OpenAI(api_key="sk-unused", base_url="http://127.0.0.1:1/v1")
    return client._make_status_error_from_response(response)


def llama_cpp_python_refusal() -> openai.APIStatusError:
    return status_error(500, {"message": LLAMA_CPP_PYTHON_MESSAGE, "type": "internal_server_error", "param": None, "code": None})


def test_both_dialects_carry_the_same_strict_schema():
    assert response_format(ResponseFormat.JSON_SCHEMA, "route_decision", SCHEMA) == {
        "type": "json_schema",
        "json_schema": {"name": "route_decision", "strict": True, "schema": SCHEMA},
    }
    assert response_format(ResponseFormat.JSON_OBJECT, "route_decision", SCHEMA) == {"type": "json_object", "schema": SCHEMA}


def test_a_refusal_names_response_format_in_a_refusal_status():
    assert refuses_response_format(llama_cpp_python_refusal())
    fastapi_422 = {"detail": [{"loc": ["body", "response_format", "type"], "msg": "Input should be 'text'"}]}
    assert refuses_response_format(status_error(422, fastapi_422))
    assert refuses_response_format(status_error(400, {"message": "response_format json_schema is not supported"}))


@pytest.mark.parametrize(
    "error",
    [
        status_error(500, {"message": "The server had an error while processing your request.", "type": "server_error"}),
        status_error(401, {"message": "Incorrect API key provided (response_format: whatever)", "code": "invalid_api_key"}),
        status_error(429, {"message": "Rate limit reached; response_format requests count too"}),
        status_error(503, {"message": "upstream response_format handler unavailable"}),
        status_error(400, {"message": "This model's maximum context length is 2048 tokens."}),
        TimeoutError("response_format"),  # no HTTP status at all
    ],
    ids=["500-other-message", "401", "429", "503", "400-other-message", "no-status"],
)
def test_anything_else_is_no_refusal(error):
    assert not refuses_response_format(error)


class Server:
    """A call's stand-in: records each response_format sent, refuses json_schema (like llama-cpp-python)
    or fails as told."""

    def __init__(self, *, takes_json_schema: bool = False, fails_with: Exception | None = None) -> None:
        self.sent: list[str] = []
        self.takes_json_schema, self.fails_with = takes_json_schema, fails_with

    def __call__(self, response_format: dict[str, Any]) -> str:
        self.sent.append(response_format["type"])
        if self.fails_with is not None:
            raise self.fails_with
        if response_format["type"] == "json_schema" and not self.takes_json_schema:
            raise llama_cpp_python_refusal()
        assert response_format.get("schema", response_format.get("json_schema", {}).get("schema")) == SCHEMA
        return '{"task": "none"}'

    async def asynchronously(self, response_format: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return self(response_format)


def test_json_schema_never_switches():
    structured, server = StructuredOutput(ResponseFormat.JSON_SCHEMA), Server()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            structured.create(server, "route_decision", SCHEMA)
    assert server.sent == ["json_schema", "json_schema"]


def test_json_object_is_sent_from_the_first_call():
    structured, server = StructuredOutput(ResponseFormat.JSON_OBJECT), Server()
    assert structured.create(server, "route_decision", SCHEMA) == '{"task": "none"}'
    assert server.sent == ["json_object"]


def test_auto_switches_on_the_refusal_and_remembers_it():
    structured, server = StructuredOutput(ResponseFormat.AUTO), Server()
    assert structured.dialect is ResponseFormat.JSON_SCHEMA
    assert structured.create(server, "route_decision", SCHEMA) == '{"task": "none"}'
    assert structured.create(server, "route_decision", SCHEMA) == '{"task": "none"}'
    assert server.sent == ["json_schema", "json_object", "json_object"]
    assert structured.dialect is ResponseFormat.JSON_OBJECT


def test_auto_stays_on_json_schema_with_a_server_that_takes_it():
    structured, server = StructuredOutput(ResponseFormat.AUTO), Server(takes_json_schema=True)
    for _ in range(2):
        structured.create(server, "route_decision", SCHEMA)
    assert server.sent == ["json_schema", "json_schema"]


@pytest.mark.parametrize(
    "error",
    [status_error(500, {"message": "CUDA out of memory"}), status_error(401, {"message": "Incorrect API key provided"})],
    ids=["500-other-message", "401"],
)
def test_auto_never_switches_on_an_unrelated_error(error):
    structured, server = StructuredOutput(ResponseFormat.AUTO), Server(fails_with=error)
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            structured.create(server, "route_decision", SCHEMA)
    assert server.sent == ["json_schema", "json_schema"]
    assert structured.dialect is ResponseFormat.JSON_SCHEMA


def test_auto_keeps_json_schema_when_json_object_is_refused_by_name_too():
    structured = StructuredOutput(ResponseFormat.AUTO)
    server = Server(fails_with=llama_cpp_python_refusal())  # refuses every response_format
    with pytest.raises(openai.InternalServerError):
        structured.create(server, "route_decision", SCHEMA)
    assert server.sent == ["json_schema", "json_object"]
    assert structured.dialect is ResponseFormat.JSON_SCHEMA


def test_auto_keeps_the_switch_when_json_object_fails_otherwise():
    """A timeout on the json_object call says nothing against the dialect the server named."""
    structured, sent = StructuredOutput(ResponseFormat.AUTO), []

    def server(response_format: dict[str, Any]) -> str:
        sent.append(response_format["type"])
        if response_format["type"] == "json_schema":
            raise llama_cpp_python_refusal()
        raise TimeoutError

    with pytest.raises(TimeoutError):
        structured.create(server, "route_decision", SCHEMA)
    assert sent == ["json_schema", "json_object"] and structured.dialect is ResponseFormat.JSON_OBJECT


def test_the_asyncio_call_switches_alike_and_once_for_concurrent_calls():
    structured, server = StructuredOutput(ResponseFormat.AUTO), Server()

    async def four_at_once() -> list[str]:
        return await asyncio.gather(*(structured.acreate(server.asynchronously, "conversation", SCHEMA) for _ in range(4)))

    assert asyncio.run(four_at_once()) == ['{"task": "none"}'] * 4
    assert sorted(server.sent) == ["json_object"] * 4 + ["json_schema"] * 4
    asyncio.run(structured.acreate(server.asynchronously, "conversation", SCHEMA))
    assert server.sent[-1] == "json_object" and len(server.sent) == 9


def test_the_setting_is_read_with_the_others():
    assert openai_response_format_from_env({}) is ResponseFormat.JSON_SCHEMA
    for value in ResponseFormat:
        settings = RuntimeSettings.from_env({"TASKROUTER_TABLE_NAME": "t", "TASKROUTER_OPENAI_RESPONSE_FORMAT": value.value})
        assert settings.openai_response_format is value
    with pytest.raises(SettingsError, match=r"^TASKROUTER_OPENAI_RESPONSE_FORMAT must be one of \['json_schema', "):
        RuntimeSettings.from_env({"TASKROUTER_TABLE_NAME": "t", "TASKROUTER_OPENAI_RESPONSE_FORMAT": "JSON"})


def test_the_503_says_what_to_set_for_a_server_that_refuses_json_schema():
    local = RuntimeSettings.from_env({"TASKROUTER_TABLE_NAME": "t"}).router.explanations.fallback_status_hints
    assert "TASKROUTER_OPENAI_RESPONSE_FORMAT=auto" in local[500] and local[400] == local[500]
    in_aws = RuntimeSettings.from_env({"TASKROUTER_TABLE_NAME": "t", "AWS_LAMBDA_FUNCTION_NAME": "f"})
    assert 500 not in in_aws.router.explanations.fallback_status_hints
    auto = RuntimeSettings.from_env({"TASKROUTER_TABLE_NAME": "t", "TASKROUTER_OPENAI_RESPONSE_FORMAT": "auto"})
    assert 500 not in auto.router.explanations.fallback_status_hints
