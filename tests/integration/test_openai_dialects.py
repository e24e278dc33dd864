"""Any OpenAI-compatible fallback server (issue 19): TASKROUTER_OPENAI_RESPONSE_FORMAT picks the
structured-output dialect of the fallback and of `data generate`. Against a double that refuses
json_schema exactly as llama-cpp-python's server does (servers.py, `OpenAIDouble.LLAMA_CPP_PYTHON`),
json_object decides, and `auto` does after one refusal, then goes straight to json_object; `auto`
never switches on another error. The schema sent with json_object is the same strict schema."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from taskrouter.composition import router_runtime
from taskrouter.cli import main

from .conftest import TASK_NAMES, Invoke
from .local_mode import SERVER, free_port, fresh_environment
from .servers import OpenAIDouble, Received, Reply
from .test_router_handler import assert_decision, assert_error, route_body

SETTING = "TASKROUTER_OPENAI_RESPONSE_FORMAT"


def sent_formats(double: OpenAIDouble) -> list[str]:
    return [request.json()["response_format"]["type"] for request in double.requests]


def strict_schema(request: Received) -> dict:
    """The schema a request holds the answer to, in either dialect."""
    response_format = request.json()["response_format"]
    if response_format["type"] == "json_object":
        assert set(response_format) == {"type", "schema"}
        return response_format["schema"]
    assert response_format["json_schema"]["strict"] is True
    return response_format["json_schema"]["schema"]


@pytest.fixture
def llama_cpp_python(router_env: pytest.MonkeyPatch, openai_server: OpenAIDouble) -> OpenAIDouble:
    """The fallback alone (no primary), its server llama-cpp-python's."""
    router_env.delenv("TASKROUTER_SAGEMAKER_ENDPOINT")
    openai_server.dialect = OpenAIDouble.LLAMA_CPP_PYTHON
    openai_server.always(openai_server.answer("follow_up_email"))
    return openai_server


# llama-cpp-python 0.3.36's answer to the fallback's json_schema request, as the real server sent it
# (`python -m llama_cpp.server --model SmolLM2-135M-Instruct.Q4_1.gguf`), but for where it is installed.
REAL_REFUSAL = (
    '{"error":{"message":"1 validation error:\\n  {\'type\': \'literal_error\', \'loc\': (\'body\', '
    "'response_format', 'type'), 'msg': \\\"Input should be 'text' or 'json_object'\\\", 'input': 'json_schema', "
    "'ctx': {'expected': \\\"'text' or 'json_object'\\\"}}\\n\\n  File \\\"/opt/venv/lib/python3.11/site-packages/"
    'llama_cpp/server/app.py\\", line 376, in create_chat_completion\\n    POST /v1/chat/completions",'
    '"type":"internal_server_error","param":null,"code":null}}'
)


def test_the_double_refuses_as_the_real_server_does() -> None:
    request = Received("POST", OpenAIDouble.PATH, {}, json.dumps({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "route_decision", "strict": True, "schema": {}}},
    }).encode())  # fmt: skip
    refusal = OpenAIDouble.llama_cpp_python_refusal(request)
    assert refusal is not None and refusal.status == 500
    assert json.loads(refusal.body) == json.loads(REAL_REFUSAL)
    taken = Received("POST", OpenAIDouble.PATH, {}, json.dumps({"response_format": {"type": "json_object", "schema": {}}}).encode())
    assert OpenAIDouble.llama_cpp_python_refusal(taken) is None


# -- the fallback ----------------------------------------------------------------------------------
def test_json_schema_gets_llama_cpp_python_s_refusal_and_a_503_that_says_what_to_set(
    invoke: Invoke, llama_cpp_python: OpenAIDouble
) -> None:
    message = assert_error(invoke(route_body()), 503, "no_backend_available")
    assert f"HTTP 500 from {llama_cpp_python.base_url}" in message
    assert f"{SETTING}=auto" in message
    assert set(sent_formats(llama_cpp_python)) == {"json_schema"}  # the router's one retry, refused alike
    assert len(llama_cpp_python.refusals) == len(llama_cpp_python.requests)


def test_json_object_decides_with_the_same_strict_schema(
    invoke: Invoke, router_env: pytest.MonkeyPatch, llama_cpp_python: OpenAIDouble
) -> None:
    llama_cpp_python.dialect = OpenAIDouble.OPENAI  # first, the schema OpenAI's dialect sends
    assert_decision(invoke(route_body()), task="follow_up_email", event="start", backend="openai", fallback_reason="not_configured")
    (in_json_schema,) = llama_cpp_python.requests
    llama_cpp_python.reset()
    llama_cpp_python.dialect = OpenAIDouble.LLAMA_CPP_PYTHON
    llama_cpp_python.always(llama_cpp_python.answer("follow_up_email"))
    router_env.setenv(SETTING, "json_object")
    router_runtime.router.cache_clear()  # a new container: the setting is read at start-up

    assert_decision(invoke(route_body()), task="follow_up_email", event="start", backend="openai", fallback_reason="not_configured")

    (in_json_object,) = llama_cpp_python.requests
    assert llama_cpp_python.refusals == []
    assert strict_schema(in_json_object) == strict_schema(in_json_schema)
    schema = strict_schema(in_json_object)
    assert schema["properties"]["task"]["enum"] == [*TASK_NAMES, "none"] and schema["additionalProperties"] is False


def test_auto_switches_after_the_refusal_then_goes_straight_to_json_object(
    invoke: Invoke, router_env: pytest.MonkeyPatch, llama_cpp_python: OpenAIDouble
) -> None:
    router_env.setenv(SETTING, "auto")

    for _ in range(3):
        result = invoke(route_body())
        assert_decision(result, task="follow_up_email", event="start", backend="openai", fallback_reason="not_configured")

    assert sent_formats(llama_cpp_python) == ["json_schema", "json_object", "json_object", "json_object"]
    assert len(llama_cpp_python.refusals) == 1
    first, switched = llama_cpp_python.requests[:2]
    assert strict_schema(switched) == strict_schema(first)


@pytest.mark.parametrize(
    "failure",
    [
        OpenAIDouble.server_error(),  # a 500 with another message
        OpenAIDouble.error(401, "invalid_request_error", "Incorrect API key provided", "invalid_api_key"),
    ],
    ids=["500-other-message", "401"],
)
def test_auto_never_switches_on_an_unrelated_error(
    invoke: Invoke, router_env: pytest.MonkeyPatch, openai_server: OpenAIDouble, failure: Reply
) -> None:
    router_env.delenv("TASKROUTER_SAGEMAKER_ENDPOINT")
    router_env.setenv(SETTING, "auto")
    openai_server.always(failure)

    assert_error(invoke(route_body()), 503, "no_backend_available")
    openai_server.always(openai_server.answer("follow_up_email"))
    assert_decision(invoke(route_body()), task="follow_up_email", event="start", backend="openai", fallback_reason="not_configured")

    assert set(sent_formats(openai_server)) == {"json_schema"}


def test_auto_with_a_server_that_takes_json_schema_never_sends_json_object(
    invoke: Invoke, router_env: pytest.MonkeyPatch, openai_server: OpenAIDouble
) -> None:
    router_env.delenv("TASKROUTER_SAGEMAKER_ENDPOINT")
    router_env.setenv(SETTING, "auto")
    openai_server.always(openai_server.answer("follow_up_email"))
    for _ in range(2):
        assert_decision(invoke(route_body()), task="follow_up_email", event="start", backend="openai", fallback_reason="not_configured")
    assert sent_formats(openai_server) == ["json_schema", "json_schema"]


# -- data generate ---------------------------------------------------------------------------------
def conversation_writer(received: Received) -> Reply:
    """A model that writes, for each plan, the turns it asks for (the plan's JSON in the prompt)."""
    intents = json.loads(re.search(r"Plan as JSON: (\[.*\])", received.json()["messages"][-1]["content"]).group(1))
    messages = []
    for number, intent in enumerate(intents):
        messages.append({"role": "user", "content": f"can you do the {intent or 'weather'} thing ({number}, {received.json()['seed']})"})
        if number < len(intents) - 1:
            messages.append({"role": "assistant", "content": "Sure."})
    return OpenAIDouble.completion(json.dumps({"messages": messages}))


@pytest.fixture
def writer(monkeypatch: pytest.MonkeyPatch):
    double = OpenAIDouble(OpenAIDouble.LLAMA_CPP_PYTHON)
    double.always(conversation_writer)
    monkeypatch.setenv("OPENAI_BASE_URL", double.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-generate")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv(SETTING, raising=False)
    yield double
    double.close()


GENERATE = ("data", "generate", "--per-scenario", "1", "--scenarios", "start,switch", "--seed", "2", "--no-progress")


def generate(capsys, out: Path, *more: str) -> tuple[int, str]:
    code = main([*GENERATE, "--out", str(out), *more])
    told = capsys.readouterr().err
    assert "Traceback" not in told
    return code, told


@pytest.mark.parametrize("setting", ["json_object", "auto"])
def test_data_generate_writes_through_json_object(writer, monkeypatch, tmp_path, capsys, setting):
    monkeypatch.setenv(SETTING, setting)
    out = tmp_path / "synthetic.jsonl"

    assert generate(capsys, out, "--concurrency", "1") == (0, "")

    assert len(out.read_text().splitlines()) == 2
    # the openai client retries a 500 twice (data generate's max_retries) before the refusal is seen
    refused = ["json_schema"] * 3 if setting == "auto" else []
    assert sent_formats(writer) == [*refused, "json_object", "json_object"]  # the switch kept for the run
    schema = strict_schema(writer.requests[-1])
    assert schema["additionalProperties"] is False and schema["required"] == ["messages"]
    if setting == "auto":
        assert strict_schema(writer.requests[0]) == schema


def test_data_generate_in_json_schema_is_refused_by_llama_cpp_python(writer, tmp_path, capsys):
    out = tmp_path / "synthetic.jsonl"
    code, told = generate(capsys, out, "--concurrency", "1")
    assert code == 1 and "2 plans failed, first: InternalServerError: Error code: 500 - 1 validation error" in told
    assert not out.exists() and set(sent_formats(writer)) == {"json_schema"}


def test_data_generate_says_a_bad_setting_in_one_line_before_any_request(writer, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(SETTING, "json")
    code, told = generate(capsys, tmp_path / "x.jsonl")
    assert code == 1 and told == (
        f"taskrouter data generate: {SETTING} must be one of ['json_schema', 'json_object', 'auto'], got 'json'\n"
    )
    assert writer.requests == []


# -- make local ------------------------------------------------------------------------------------
def test_make_local_says_a_bad_setting_in_one_line(tmp_path):
    environment = fresh_environment(tmp_path, free_port())
    environment[SETTING] = "json_schema_strict"
    result = subprocess.run(SERVER, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"cannot start: {SETTING} must be one of ['json_schema', 'json_object', 'auto'], got 'json_schema_strict' "
        "(every setting: docs/configuration.md)"
    ]
