"""The router Lambda end to end: API Gateway event in, proxy response out (docs/api.md).

Real boto3/botocore and openai clients talk to moto (DynamoDB, Secrets Manager) and to HTTP doubles
of SageMaker runtime and OpenAI; see conftest.py.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import (
    COMPONENT_NAME,
    ENDPOINT_NAME,
    OPENAI_KEY,
    PRIMARY_TIMEOUT_MS,
    TASK_NAMES,
    AwsState,
    HttpResult,
    Invoke,
)
from .servers import OpenAIDouble, Received, SageMakerRuntimeDouble

MAX_BODY = 64 * 1024
DECISION_KEYS = {"task", "event", "backend", "fallback_reason", "confidence", "latency_ms", "request_id"}
JSON_HEADERS = {"Content-Type": ["application/json"]}


# -- helpers ----------------------------------------------------------------------------------------
def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


CONVERSATION = [
    user("I just got off a call with Dana from Acme about the pricing."),
    assistant("Great, how did it go? Anything I can help with?"),
    user("Yes, please send her a follow-up email recapping what we agreed."),
]


def route_body(conversation: list[dict[str, Any]] | None = None, current_task: str | None = None, **extra: Any) -> dict:
    return {"conversation": CONVERSATION if conversation is None else conversation, "current_task": current_task, **extra}


def assert_decision(
    result: HttpResult,
    *,
    task: str | None,
    event: str,
    backend: str,
    fallback_reason: str | None,
    ignored_tasks: list[str] | None = None,
) -> dict[str, Any]:
    assert result.status == 200, result.raw_body
    assert result.multi_headers == JSON_HEADERS
    assert not result.is_base64
    body = result.json()
    expected_keys = DECISION_KEYS | ({"ignored_tasks"} if ignored_tasks is not None else set())
    assert set(body) == expected_keys, body
    assert body["task"] == task
    assert body["event"] == event
    assert body["backend"] == backend
    assert body["fallback_reason"] == fallback_reason
    assert body["request_id"] == result.request_id
    assert isinstance(body["latency_ms"], (int, float)) and not isinstance(body["latency_ms"], bool)
    assert 0 <= body["latency_ms"] < 10_000
    if ignored_tasks is not None:
        assert body["ignored_tasks"] == ignored_tasks
    return body


def assert_error(result: HttpResult, status: int, code: str, *, names: str | None = None) -> str:
    """The contract's one error shape; returns the message (which must name `names` if given)."""
    assert result.status == status, result.raw_body
    body = result.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    if names is not None:
        assert names in message, message
    if status == 503:
        assert set(result.multi_headers) == {"Content-Type", "Retry-After"}
        assert result.headers["Content-Type"] == "application/json"
        assert int(result.headers["Retry-After"]) >= 1
    else:
        assert result.multi_headers == JSON_HEADERS
    return message


def only_request(double: SageMakerRuntimeDouble | OpenAIDouble) -> Received:
    requests = double.requests
    assert len(requests) == 1, [r.path for r in requests]
    return requests[0]


def sagemaker_inputs(double: SageMakerRuntimeDouble) -> str:
    """The whole prompt the primary got: its chat messages' contents, joined."""
    request = only_request(double)
    assert double.refusals == []
    return "\n".join(message["content"] for message in request.json()["messages"])


def assert_openai_request(openai_server: OpenAIDouble, choices: tuple[str, ...]) -> dict[str, Any]:
    """The fallback's request: the key from Secrets Manager, structured output over `choices`."""
    request = only_request(openai_server)
    assert request.header("Authorization") == f"Bearer {OPENAI_KEY}"
    assert request.header("Content-Type") == "application/json"
    body = request.json()
    assert body["model"] == "gpt-4.1-mini"
    assert body["temperature"] == 0
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    schema = response_format["json_schema"]["schema"]
    assert response_format["json_schema"]["strict"] is True
    assert schema["properties"]["task"]["enum"] == [*choices, "none"]
    assert schema["required"][-1] == "task"  # any reasoning fields come first
    assert schema["additionalProperties"] is False
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    return body


def padded_body(size: int) -> str:
    """A valid request body of exactly `size` bytes (long messages, then JSON whitespace)."""
    conversation = [user("x" * 4000) for _ in range(size // 4100)] or [user("x")]
    text = json.dumps(route_body(conversation))
    assert len(text.encode()) <= size
    return text + " " * (size - len(text.encode()))


# -- the primary decides ----------------------------------------------------------------------------
def test_sagemaker_decides_and_receives_the_adapter_and_prompt(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    sagemaker.script(sagemaker.answer("follow_up_email"))

    result = invoke(route_body(), request_id="req-0001-abcd")

    body = assert_decision(result, task="follow_up_email", event="start", backend="sagemaker", fallback_reason=None)
    assert body["request_id"] == "req-0001-abcd"
    request = only_request(sagemaker)
    assert SageMakerRuntimeDouble.endpoint_of(request) == ENDPOINT_NAME
    assert SageMakerRuntimeDouble.component_of(request) == COMPONENT_NAME
    assert request.header("Content-Type") == "application/json"
    assert request.header("Accept") == "application/json"
    assert request.header("Authorization").startswith("AWS4-HMAC-SHA256 ")  # a real, signed botocore call
    assert sagemaker.refusals == []  # the container's request model takes it (see the double)
    payload = request.json()
    assert set(payload) == {"messages", "max_completion_tokens", "temperature", "repetition_penalty", "structured_outputs",
                            "logprobs"}
    assert payload["logprobs"] is True  # each generated token's logprob: the answer's confidence
    system, user_message = payload["messages"]
    assert (system["role"], user_message["role"]) == ("system", "user")  # the container applies the chat template
    for name in TASK_NAMES:
        assert name in system["content"]
    # the constant part (instructions, catalogue) first, for the prefix cache; this request's part last
    assert "send her a follow-up email recapping what we agreed" in user_message["content"]
    assert "send her a follow-up" not in system["content"]
    assert payload["temperature"] == 0 and payload["max_completion_tokens"] > 0
    # the engine is asked to decode only an allowed answer: exactly the allowed names and none
    assert payload["structured_outputs"] == {"choice": [*TASK_NAMES, "none"]}
    assert openai_server.requests == []


def test_request_without_component_sends_no_component_header(
    invoke: Invoke, router_env: pytest.MonkeyPatch, sagemaker: SageMakerRuntimeDouble
) -> None:
    router_env.delenv("TASKROUTER_SAGEMAKER_COMPONENT")
    sagemaker.script(sagemaker.answer("follow_up_email"))

    assert_decision(invoke(route_body()), task="follow_up_email", event="start", backend="sagemaker", fallback_reason=None)
    assert SageMakerRuntimeDouble.component_of(only_request(sagemaker)) is None


@pytest.mark.parametrize(
    ("current_task", "answer", "task", "event"),
    [
        (None, "follow_up_email", "follow_up_email", "start"),
        ("follow_up_email", "follow_up_email", "follow_up_email", "continue"),
        ("follow_up_email", "prepare_linkedin_post", "prepare_linkedin_post", "switch"),
        ("follow_up_email", "none", None, "end"),
        (None, "none", None, "none"),
    ],
    ids=["start", "continue", "switch", "end", "none"],
)
def test_event_table(
    invoke: Invoke,
    sagemaker: SageMakerRuntimeDouble,
    current_task: str | None,
    answer: str,
    task: str | None,
    event: str,
) -> None:
    sagemaker.script(sagemaker.answer(f"  {answer}\n"))  # surrounding whitespace is no part of the answer

    result = invoke(route_body(current_task=current_task))

    assert_decision(result, task=task, event=event, backend="sagemaker", fallback_reason=None)
    assert f"The task running now: {current_task or 'none'}." in sagemaker_inputs(sagemaker)


@pytest.mark.parametrize(("answer", "task", "event"), [("follow_up_email", "follow_up_email", "start"), ("none", None, "none")])
def test_current_task_unknown_to_the_registry_is_treated_as_null(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, answer: str, task: str | None, event: str
) -> None:
    sagemaker.script(sagemaker.answer(answer))

    result = invoke(route_body(current_task="retired_task_name"))

    assert_decision(result, task=task, event=event, backend="sagemaker", fallback_reason=None)
    inputs = sagemaker_inputs(sagemaker)
    assert "The task running now: none." in inputs
    assert "retired_task_name" not in inputs


def test_a_task_added_to_the_registry_is_offered(
    invoke: Invoke, aws: AwsState, sagemaker: SageMakerRuntimeDouble
) -> None:
    aws.put_task("book_demo_call", "Book a product demo call with a prospect.", ["Set up a demo with Dana"])
    sagemaker.script(sagemaker.answer("book_demo_call"))

    assert_decision(invoke(route_body()), task="book_demo_call", event="start", backend="sagemaker", fallback_reason=None)
    inputs = sagemaker_inputs(sagemaker)
    assert "book_demo_call: Book a product demo call with a prospect." in inputs


# -- `tasks` restricts the choice -------------------------------------------------------------------
def test_tasks_restricts_the_choice_and_lists_unknown_names(invoke: Invoke, sagemaker: SageMakerRuntimeDouble) -> None:
    sagemaker.script(sagemaker.answer("prepare_linkedin_post"))

    result = invoke(
        route_body(tasks=["prepare_linkedin_post", "no_such_task", "follow_up_email", "another_ghost", "no_such_task"])
    )

    assert_decision(
        result,
        task="prepare_linkedin_post",
        event="start",
        backend="sagemaker",
        fallback_reason=None,
        ignored_tasks=["no_such_task", "another_ghost"],
    )
    inputs = sagemaker_inputs(sagemaker)
    assert "prepare_linkedin_post" in inputs and "follow_up_email" in inputs
    for name in ("prepare_meeting_minutes", "structure_ideas_into_doc", "create_one_minute_pitch", "no_such_task"):
        assert name not in inputs


def test_tasks_of_known_names_only_has_no_ignored_tasks(invoke: Invoke, sagemaker: SageMakerRuntimeDouble) -> None:
    sagemaker.script(sagemaker.answer("follow_up_email"))

    result = invoke(route_body(tasks=["follow_up_email"]))

    assert_decision(result, task="follow_up_email", event="start", backend="sagemaker", fallback_reason=None)


def test_empty_tasks_allows_only_none(invoke: Invoke, sagemaker: SageMakerRuntimeDouble) -> None:
    sagemaker.script(sagemaker.answer("none"))

    result = invoke(route_body(current_task="follow_up_email", tasks=[]))

    assert_decision(result, task=None, event="end", backend="sagemaker", fallback_reason=None)


def test_primary_naming_a_registry_task_outside_tasks_is_invalid_output(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    sagemaker.script(sagemaker.answer("prepare_meeting_minutes"))  # in the registry, not in `tasks`
    openai_server.script(openai_server.answer("follow_up_email"))

    result = invoke(route_body(tasks=["follow_up_email", "prepare_linkedin_post", "ghost_task"]))

    assert_decision(
        result,
        task="follow_up_email",
        event="start",
        backend="openai",
        fallback_reason="invalid_output",
        ignored_tasks=["ghost_task"],
    )
    assert_openai_request(openai_server, ("follow_up_email", "prepare_linkedin_post"))


# -- the fallback decides ---------------------------------------------------------------------------
FALLBACK_CASES = {
    # the double holds its answer until the test ends (reset releases it): the wait costs nothing
    "timeout": (SageMakerRuntimeDouble.answer("follow_up_email", delay_s=5.0), "timeout"),
    "model_error_424": (SageMakerRuntimeDouble.model_error(), "error"),
    "internal_failure_500": (SageMakerRuntimeDouble.internal_failure(), "error"),
    "throttling_400": (SageMakerRuntimeDouble.throttling(), "throttled"),
    "too_many_requests_429": (SageMakerRuntimeDouble.too_many_requests(), "throttled"),
    "prose": (SageMakerRuntimeDouble.answer("Sure! The user wants the follow-up email."), "invalid_output"),
    "unknown_name": (SageMakerRuntimeDouble.answer("send_invoice"), "invalid_output"),
    "name_with_period": (SageMakerRuntimeDouble.answer("follow_up_email."), "invalid_output"),
    "wrong_case": (SageMakerRuntimeDouble.answer("Follow_Up_Email"), "invalid_output"),
    "two_names": (SageMakerRuntimeDouble.answer("follow_up_email prepare_linkedin_post"), "invalid_output"),
    "empty_text": (SageMakerRuntimeDouble.answer(""), "invalid_output"),
}


@pytest.mark.parametrize("case", list(FALLBACK_CASES))
def test_primary_failure_falls_back_to_openai(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble, case: str
) -> None:
    reply, reason = FALLBACK_CASES[case]
    sagemaker.script(reply)
    openai_server.script(openai_server.answer("follow_up_email"))

    result = invoke(route_body(current_task="prepare_meeting_minutes"))

    body = assert_decision(result, task="follow_up_email", event="switch", backend="openai", fallback_reason=reason)
    assert len(sagemaker.requests) == 1  # one try: the fallback, not a retry, covers a miss
    request = assert_openai_request(openai_server, TASK_NAMES)
    assert "send her a follow-up email recapping what we agreed" in request["messages"][1]["content"]
    if reason == "timeout":
        # decided once the primary's deadline passed, not when its (5 s late) answer came
        assert PRIMARY_TIMEOUT_MS * 0.9 <= body["latency_ms"] < 5000


def test_primary_unreachable_is_an_error(
    invoke: Invoke, router_env: pytest.MonkeyPatch, openai_server: OpenAIDouble
) -> None:
    router_env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "http://127.0.0.1:9")  # nothing listens there
    openai_server.script(openai_server.answer("follow_up_email"))

    result = invoke(route_body())

    assert_decision(result, task="follow_up_email", event="start", backend="openai", fallback_reason="error")


def test_a_hung_primary_behind_a_fast_hedge_opens_the_circuit(
    invoke: Invoke, router_env: pytest.MonkeyPatch, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    """Every request is answered by the hedged fallback, yet each primary call that ends in a read
    timeout counts: the circuit opens and the dead endpoint stops being called."""
    router_env.setenv("TASKROUTER_HEDGE_AFTER_MS", "20")
    router_env.setenv("TASKROUTER_BREAKER_FAILURES", "3")
    sagemaker.always(sagemaker.answer("follow_up_email", delay_s=30))  # hangs past every timeout
    openai_server.always(openai_server.answer("follow_up_email"))

    reasons = []
    deadline = time.monotonic() + 30
    while "circuit_open" not in reasons and time.monotonic() < deadline:
        reasons.append(invoke(route_body()).json()["fallback_reason"])
        time.sleep(0.1)
    assert reasons[-1] == "circuit_open" and set(reasons[:-1]) == {"timeout"}, reasons
    called = len(sagemaker.requests)
    assert [invoke(route_body()).json()["fallback_reason"] for _ in range(5)] == ["circuit_open"] * 5
    assert len(sagemaker.requests) == called


def test_a_primary_with_no_copy_leaves_the_decision_to_the_fallback_and_the_circuit_closed(
    invoke: Invoke, router_env: pytest.MonkeyPatch, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    """Scaled to zero: every request still asks the primary (that is what wakes it) and gets no_capacity."""
    router_env.setenv("TASKROUTER_BREAKER_FAILURES", "2")
    sagemaker.always(sagemaker.no_capacity())
    openai_server.always(openai_server.answer("follow_up_email"))

    reasons = [invoke(route_body()).json()["fallback_reason"] for _ in range(5)]

    assert reasons == ["no_capacity"] * 5
    assert len(sagemaker.requests) == 5  # never circuit_open


def test_primary_not_configured(
    invoke: Invoke, router_env: pytest.MonkeyPatch, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    router_env.delenv("TASKROUTER_SAGEMAKER_ENDPOINT")
    openai_server.script(openai_server.answer("none"))

    result = invoke(route_body(current_task="follow_up_email"))

    assert_decision(result, task=None, event="end", backend="openai", fallback_reason="not_configured")
    assert sagemaker.requests == []
    assert_openai_request(openai_server, TASK_NAMES)


def test_fallback_takes_a_rotated_secret_after_a_cold_start(
    invoke: Invoke, aws: AwsState, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    aws.secretsmanager.put_secret_value(SecretId=aws.secret_arn, SecretString="sk-rotated-0042")
    sagemaker.script(sagemaker.internal_failure())
    openai_server.script(openai_server.answer("follow_up_email"))

    assert_decision(invoke(route_body()), task="follow_up_email", event="start", backend="openai", fallback_reason="error")
    assert only_request(openai_server).header("Authorization") == "Bearer sk-rotated-0042"


# -- no backend can decide: 503 ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("openai_reply", "attempts"),
    [
        (OpenAIDouble.server_error(), 2),  # retried once, with jitter, inside the fallback budget
        (OpenAIDouble.rate_limited(), 2),
        (OpenAIDouble.answer("send_invoice"), 1),  # not a registry task: a second ask would not change it
        (OpenAIDouble.completion("follow_up_email"), 1),  # not the requested JSON
        (OpenAIDouble.completion('{"task": null}'), 1),
    ],
    ids=["openai_500", "openai_429", "openai_unknown_name", "openai_not_json", "openai_null_task"],
)
def test_both_backends_fail(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble, openai_reply: Any, attempts: int
) -> None:
    sagemaker.script(sagemaker.internal_failure())
    openai_server.script(*[openai_reply] * attempts)

    result = invoke(route_body())

    assert_error(result, 503, "no_backend_available")
    assert result.headers["Retry-After"] == "2"
    assert len(sagemaker.requests) == 1 and len(openai_server.requests) == attempts


def test_a_failed_fallback_call_is_retried_once(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    sagemaker.script(sagemaker.internal_failure())
    openai_server.script(openai_server.server_error(), openai_server.answer("follow_up_email"))

    assert_decision(invoke(route_body()), task="follow_up_email", event="start", backend="openai", fallback_reason="error")
    assert len(openai_server.requests) == 2


def test_openai_naming_a_task_outside_tasks_is_refused(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    sagemaker.script(sagemaker.answer("Sure! The user wants the follow-up email."))
    openai_server.script(openai_server.answer("prepare_meeting_minutes"))

    result = invoke(route_body(tasks=["follow_up_email"]))

    assert_error(result, 503, "no_backend_available")


def test_fallback_timeout_is_a_503(
    invoke: Invoke, router_env: pytest.MonkeyPatch, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    router_env.setenv("TASKROUTER_FALLBACK_TIMEOUT_MS", "300")
    router_env.setenv("TASKROUTER_RETRY_AFTER_S", "7")
    sagemaker.script(sagemaker.answer("follow_up_email", delay_s=5.0))
    openai_server.script(openai_server.answer("follow_up_email", delay_s=5.0))

    result = invoke(route_body())

    assert_error(result, 503, "no_backend_available")
    assert result.headers["Retry-After"] == "7"
    # the hedged call timed out on its own deadline: no retry was left in the budget
    assert len(openai_server.requests) == 1


def test_not_configured_primary_and_failing_fallback_is_a_503(
    invoke: Invoke, router_env: pytest.MonkeyPatch, openai_server: OpenAIDouble
) -> None:
    router_env.delenv("TASKROUTER_SAGEMAKER_ENDPOINT")
    openai_server.script(openai_server.server_error())

    assert_error(invoke(route_body()), 503, "no_backend_available")


def test_no_fallback_configured_and_failing_primary_is_a_503(
    invoke: Invoke, router_env: pytest.MonkeyPatch, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    router_env.delenv("TASKROUTER_OPENAI_SECRET_ARN")
    sagemaker.script(sagemaker.model_error())

    assert_error(invoke(route_body()), 503, "no_backend_available")
    assert openai_server.requests == []


def test_registry_unreachable_is_a_503(
    invoke: Invoke, router_env: pytest.MonkeyPatch, sagemaker: SageMakerRuntimeDouble
) -> None:
    router_env.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")  # nothing listens there

    assert_error(invoke(route_body()), 503, "no_backend_available")
    assert sagemaker.requests == []


# -- request validation: 400 / 413 ------------------------------------------------------------------
def _messages(count: int) -> list[dict[str, str]]:
    return [user(f"message {i}") if i % 2 == 0 else assistant(f"message {i}") for i in range(count - 1)] + [user("last")]


INVALID_REQUESTS: dict[str, tuple[Any, str]] = {
    # id: (body sent as the event's body, text the message must contain)
    "malformed_json": ('{"conversation": [{"role": "user", "content": "hi"}', "body"),
    "not_json_at_all": ("conversation=hello", "body"),
    "array_body": ('[{"role": "user", "content": "hi"}]', "body"),
    "string_body": ('"route me"', "body"),
    "null_body": ("null", "body"),
    "number_body": ("42", "body"),
    "missing_conversation": ({"current_task": None}, "conversation"),
    "conversation_null": ({"conversation": None, "current_task": None}, "conversation"),
    "conversation_not_a_list": ({"conversation": "hello", "current_task": None}, "conversation"),
    "empty_conversation": ({"conversation": [], "current_task": None}, "conversation"),
    "51_messages": ({"conversation": _messages(51), "current_task": None}, "conversation"),
    "last_message_assistant": (
        {"conversation": [user("hi"), assistant("hello, how can I help?")], "current_task": None},
        "conversation",
    ),
    "message_not_an_object": ({"conversation": ["hello"], "current_task": None}, "conversation[0]"),
    "message_null": ({"conversation": [None], "current_task": None}, "conversation[0]"),
    "bad_role": ({"conversation": [{"role": "system", "content": "hi"}], "current_task": None}, "conversation[0].role"),
    "missing_role": ({"conversation": [{"content": "hi"}], "current_task": None}, "conversation[0].role"),
    "missing_content": ({"conversation": [{"role": "user"}], "current_task": None}, "conversation[0].content"),
    "empty_content": ({"conversation": [user("")], "current_task": None}, "conversation[0].content"),
    "content_4001_chars": ({"conversation": [user("y" * 4001)], "current_task": None}, "conversation[0].content"),
    "content_not_a_string": (
        {"conversation": [{"role": "user", "content": 42}], "current_task": None},
        "conversation[0].content",
    ),
    "message_extra_field": (
        {"conversation": [{"role": "user", "content": "hi", "name": "dana"}], "current_task": None},
        "conversation[0]: unknown field",
    ),
    "later_message_bad": (
        {"conversation": [user("hi"), {"role": "assistant", "content": ""}, user("ok")], "current_task": None},
        "conversation[1].content",
    ),
    "current_task_number": ({"conversation": [user("hi")], "current_task": 42}, "current_task"),
    "current_task_list": ({"conversation": [user("hi")], "current_task": ["follow_up_email"]}, "current_task"),
    "tasks_string": ({"conversation": [user("hi")], "current_task": None, "tasks": "follow_up_email"}, "tasks"),
    "tasks_of_numbers": ({"conversation": [user("hi")], "current_task": None, "tasks": [1, 2]}, "tasks[0]"),
    "bad_strategy": ({"conversation": [user("hi")], "current_task": None, "strategy": "chain_of_thought"}, "strategy"),
    "strategy_number": ({"conversation": [user("hi")], "current_task": None, "strategy": 1}, "strategy"),
    # an unknown key is caller text: its place is named, the key itself is not echoed
    "unknown_field": ({"conversation": [user("hi")], "current_task": None, "temperature": 0.2}, "body: unknown field"),
    "missing_body": (None, "body"),
    "empty_body": ("", "body"),
}


@pytest.mark.parametrize("case", list(INVALID_REQUESTS))
def test_invalid_request(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble, case: str
) -> None:
    body, field = INVALID_REQUESTS[case]

    result = invoke(body)

    assert_error(result, 400, "invalid_request", names=field)
    assert sagemaker.requests == [] and openai_server.requests == []


def test_invalid_base64_body_is_a_400(invoke: Invoke, sagemaker: SageMakerRuntimeDouble) -> None:
    result = invoke("this is not base64!", overrides={"isBase64Encoded": True})

    assert_error(result, 400, "invalid_request", names="body")
    assert sagemaker.requests == []


def test_base64_encoded_body_is_accepted(invoke: Invoke, sagemaker: SageMakerRuntimeDouble) -> None:
    sagemaker.script(sagemaker.answer("follow_up_email"))

    result = invoke(json.dumps(route_body()).encode("utf-8"))  # bytes: sent base64-encoded

    assert result.event["isBase64Encoded"] is True
    assert_decision(result, task="follow_up_email", event="start", backend="sagemaker", fallback_reason=None)


def test_limits_themselves_are_accepted(invoke: Invoke, sagemaker: SageMakerRuntimeDouble) -> None:
    sagemaker.always(sagemaker.answer("none"))

    fifty = invoke(route_body(_messages(50)))
    long_content = invoke(route_body([user("z" * 4000)]))
    unicode_content = invoke(route_body([user("é" * 4000)]))  # characters, not bytes

    for result in (fifty, long_content, unicode_content):
        assert_decision(result, task=None, event="none", backend="sagemaker", fallback_reason=None)


def test_body_over_64_kib_is_413(invoke: Invoke, sagemaker: SageMakerRuntimeDouble) -> None:
    body = padded_body(MAX_BODY + 1)
    assert len(body.encode()) == MAX_BODY + 1

    result = invoke(body)

    assert_error(result, 413, "request_too_large", names="body")
    assert sagemaker.requests == []


def test_body_over_64_kib_base64_encoded_is_413(invoke: Invoke) -> None:
    result = invoke(padded_body(MAX_BODY + 1).encode())

    assert_error(result, 413, "request_too_large", names="body")


def test_body_over_64_kib_that_is_not_json_is_413(invoke: Invoke) -> None:
    assert_error(invoke("{" * (MAX_BODY + 100)), 413, "request_too_large")


def test_body_of_exactly_64_kib_is_accepted(invoke: Invoke, sagemaker: SageMakerRuntimeDouble) -> None:
    body = padded_body(MAX_BODY)
    assert len(body.encode()) == MAX_BODY
    sagemaker.script(sagemaker.answer("none"))

    result = invoke(body)

    assert_decision(result, task=None, event="none", backend="sagemaker", fallback_reason=None)


def test_body_size_counts_bytes_not_characters(invoke: Invoke, sagemaker: SageMakerRuntimeDouble) -> None:
    # 16 messages of 3000 two-byte characters and one ASCII one: under 64 Ki characters, over 64 KiB.
    body = json.dumps(route_body([user("é" * 3000) for _ in range(16)] + [user("a" * 4000)]), ensure_ascii=False)
    assert len(body) < MAX_BODY < len(body.encode())

    assert_error(invoke(body), 413, "request_too_large")
    assert sagemaker.requests == []


# -- strategies -------------------------------------------------------------------------------------
STRATEGY_ANSWERS = {
    "zero_shot": ("follow_up_email", 80, "exactly one word"),
    "few_shot_cot": (
        "The user wants to recap the call with Dana in an email.\nAnswer: follow_up_email",
        880,
        "Answer: <an allowed task name or none>",
    ),
    "react": (
        "Thought: the user asks to write to Dana after the call\n"
        "Observation: follow_up_email matches it\n"
        "Final Answer: follow_up_email",
        1680,
        "Final Answer: <an allowed task name or none>",
    ),
}
# What each strategy's fallback answer looks like: its reasoning fields, then the task.
STRATEGY_JSON = {
    "zero_shot": {"task": "follow_up_email"},
    "few_shot_cot": {"reasoning": "The user wants to recap the call in an email.", "task": "follow_up_email"},
    "react": {"thought": "an email to Dana", "observation": "follow_up_email matches", "task": "follow_up_email"},
}


@pytest.mark.parametrize("strategy", list(STRATEGY_ANSWERS))
def test_each_strategy_succeeds(invoke: Invoke, sagemaker: SageMakerRuntimeDouble, strategy: str) -> None:
    answer, max_tokens, answer_format = STRATEGY_ANSWERS[strategy]
    sagemaker.script(sagemaker.answer(answer))

    result = invoke(route_body(strategy=strategy))

    assert_decision(result, task="follow_up_email", event="start", backend="sagemaker", fallback_reason=None)
    payload = only_request(sagemaker).json()
    assert sagemaker.refusals == []
    assert payload["max_completion_tokens"] == max_tokens
    assert answer_format in payload["messages"][0]["content"]
    constraint = payload["structured_outputs"]
    assert re.fullmatch(constraint["regex"], answer) if "regex" in constraint else answer in constraint["choice"]


@pytest.mark.parametrize("strategy", list(STRATEGY_JSON))
def test_each_strategy_reaches_the_fallback_with_its_own_prompt_and_schema(
    invoke: Invoke, router_env: pytest.MonkeyPatch, openai_server: OpenAIDouble, strategy: str
) -> None:
    router_env.delenv("TASKROUTER_SAGEMAKER_ENDPOINT")
    openai_server.script(openai_server.completion(json.dumps(STRATEGY_JSON[strategy])))

    result = invoke(route_body(strategy=strategy))

    assert_decision(result, task="follow_up_email", event="start", backend="openai", fallback_reason="not_configured")
    body = assert_openai_request(openai_server, TASK_NAMES)
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == list(STRATEGY_JSON[strategy])  # reasoning before the task
    system = body["messages"][0]["content"]
    if strategy == "few_shot_cot":  # worked examples built from the registry's own examples
        assert '<message role="user">Write up the minutes of my call with Acme</message>' in system
        assert '{"reasoning": "The last message asks for what prepare_meeting_minutes does.", ' \
               '"task": "prepare_meeting_minutes"}' in system
    if strategy == "react":
        assert '"thought"' in system and '"observation"' in system
    if strategy == "zero_shot":
        assert "Worked examples" not in system and '"thought"' not in system


@pytest.mark.parametrize(
    ("strategy", "answer"),
    [
        ("few_shot_cot", "The user wants an email.\nfollow_up_email"),  # no "Answer:" line
        ("few_shot_cot", "Answer: follow_up_email\nI hope this helps."),  # answer not on the last line
        ("react", "Thought: an email\nAnswer: follow_up_email"),  # not "Final Answer:"
        ("zero_shot", "Answer: follow_up_email"),
    ],
)
def test_strategy_answer_in_the_wrong_format_is_invalid_output(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble, strategy: str, answer: str
) -> None:
    sagemaker.script(sagemaker.answer(answer))
    openai_server.script(openai_server.answer("follow_up_email"))

    result = invoke(route_body(strategy=strategy))

    assert_decision(result, task="follow_up_email", event="start", backend="openai", fallback_reason="invalid_output")


def test_default_strategy_comes_from_the_stage_configuration(
    invoke: Invoke, router_env: pytest.MonkeyPatch, sagemaker: SageMakerRuntimeDouble
) -> None:
    router_env.setenv("TASKROUTER_DEFAULT_STRATEGY", "react")
    answer, max_tokens, _ = STRATEGY_ANSWERS["react"]
    sagemaker.script(sagemaker.answer(answer))

    assert_decision(invoke(route_body()), task="follow_up_email", event="start", backend="sagemaker", fallback_reason=None)
    assert only_request(sagemaker).json()["max_completion_tokens"] == max_tokens


# -- logs -------------------------------------------------------------------------------------------
SECRET_PHRASE = "Purple-Walrus-7731 confidential merger with Globex"


def _log_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def test_logs_never_contain_the_conversation(
    invoke: Invoke,
    sagemaker: SageMakerRuntimeDouble,
    openai_server: OpenAIDouble,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="taskrouter")
    secret_conversation = [user(f"Draft notes on the {SECRET_PHRASE}."), assistant(SECRET_PHRASE), user(SECRET_PHRASE)]
    sagemaker.script(
        sagemaker.answer("follow_up_email"),  # primary decides
        sagemaker.answer(f"I think {SECRET_PHRASE}"),  # invalid output, echoing the content
        sagemaker.model_error(),  # both fail
        sagemaker.answer("prepare_linkedin_post"),  # an unknown current_task
    )
    openai_server.script(openai_server.answer("none"), openai_server.server_error())

    results = [
        invoke(route_body(secret_conversation), request_id="log-req-1"),
        invoke(route_body(secret_conversation), request_id="log-req-2"),
        invoke(route_body(secret_conversation), request_id="log-req-3"),
        invoke(route_body([*secret_conversation, assistant(SECRET_PHRASE)]), request_id="log-req-4"),  # 400
        invoke(route_body([{"role": SECRET_PHRASE, "content": SECRET_PHRASE}]), request_id="log-req-5"),  # 400
        invoke(route_body(secret_conversation, current_task=SECRET_PHRASE), request_id="log-req-6"),
        invoke(json.dumps(route_body(secret_conversation))[:-3], request_id="log-req-7"),  # malformed JSON
    ]
    assert [r.status for r in results] == [200, 200, 503, 400, 400, 200, 400]
    for result in results:
        assert SECRET_PHRASE not in result.raw_body  # nor echoed in an answer

    captured = capsys.readouterr()
    everything = captured.out + captured.err + caplog.text
    assert SECRET_PHRASE not in everything
    assert "Purple-Walrus" not in everything

    routed = [line for line in _log_lines(captured.out) if line.get("message") == "routed"]
    assert [line["correlation_id"] for line in routed] == ["log-req-1", "log-req-2", "log-req-6"]
    assert [line["backend"] for line in routed] == ["sagemaker", "openai", "sagemaker"]
    assert [line["event"] for line in routed] == ["start", "none", "start"]


# -- no input answers 500 ---------------------------------------------------------------------------
def test_other_paths_and_methods_are_not_a_500(invoke: Invoke) -> None:
    for result in (invoke(route_body(), method="GET"), invoke(route_body(), path="/routes")):
        assert result.status in (404, 405)
        body = result.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
_messages_strategy = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", ""]), "content": st.text(max_size=30)}
    )
    | _json_values,
    max_size=4,
)
_bodies = st.one_of(
    st.text(max_size=60),
    _json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"conversation": _messages_strategy | _json_values},
        optional={
            "current_task": st.sampled_from([None, "follow_up_email", "ghost", ""]) | _json_values,
            "tasks": st.lists(st.sampled_from([*TASK_NAMES, "ghost", ""]), max_size=3) | _json_values,
            "strategy": st.sampled_from(["zero_shot", "few_shot_cot", "react", "other"]) | _json_values,
            "extra": _json_values,
        },
    ).map(json.dumps),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies, answer=st.sampled_from(["follow_up_email", "none", "ghost", "Sure!"]))
def test_no_input_answers_500(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble, body: str, answer: str
) -> None:
    sagemaker.always(sagemaker.answer(answer))
    openai_server.always(openai_server.answer("follow_up_email"))

    result = invoke(body)

    assert result.status in (200, 400, 503), result.raw_body
    payload = result.json()
    if result.status == 200:
        assert DECISION_KEYS <= set(payload)
        assert payload["task"] is None or payload["task"] in TASK_NAMES
    else:
        assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}


def _emf_documents(stdout: str) -> list[dict[str, Any]]:
    return [line for line in _log_lines(stdout) if "_aws" in line]


def _metric_values(documents: list[dict[str, Any]], name: str) -> list[tuple[dict[str, str], Any]]:
    """(dimensions, value) of every EMF document that carries `name`."""
    found = []
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            if any(metric["Name"] == name for metric in directive["Metrics"]):
                dimensions = {key: document[key] for keys in directive["Dimensions"] for key in keys}
                found.append((dimensions, document[name]))
    return found


def test_each_decision_publishes_its_metrics(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    sagemaker.script(sagemaker.answer("follow_up_email"), sagemaker.answer("Sure, an e-mail."))
    openai_server.script(openai_server.answer("none"))
    capsys.readouterr()

    assert invoke(route_body()).status == 200
    assert invoke(route_body(current_task="follow_up_email", strategy="react")).status == 200

    documents = _emf_documents(capsys.readouterr().out)
    assert all(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TaskRouter" for doc in documents)
    service = {"service": "taskrouter-router"}
    # latency by strategy: each strategy is held to its own budget
    assert [dims for dims, _ in _metric_values(documents, "DecisionLatency")] == [
        {**service, "strategy": "zero_shot"}, {**service, "strategy": "react"},
    ]
    assert [value for _, value in _metric_values(documents, "Fallback")] == [[0.0], [1.0]]
    assert [value for _, value in _metric_values(documents, "InvalidOutput")] == [[0.0], [1.0]]
    decisions = [dims for dims, _ in _metric_values(documents, "Decisions")]
    assert [(d["backend"], d["event"]) for d in decisions] == [("sagemaker", "start"), ("openai", "end")]
    assert [dims["reason"] for dims, _ in _metric_values(documents, "Fallbacks")] == ["invalid_output"]


# -- confidence and escalation (docs/api.md, "Confidence and escalation") ------------------------------
SURE = [("follow", -0.01), ("_up", 0.0), ("_email", -0.02), ("<|im_end|>", 0.0)]
DOUBTFUL = [("follow", -0.9), ("_up", -0.1), ("_email", -0.05), ("<|im_end|>", 0.0)]


def _confidence(logprobs: list[tuple[str, float]]) -> float:
    return math.exp(sum(logprob for _, logprob in logprobs))


def test_the_decision_carries_the_primarys_confidence_and_null_when_it_gave_no_answer(
    invoke: Invoke, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble
) -> None:
    sagemaker.script(sagemaker.answer("follow_up_email", logprobs=DOUBTFUL), sagemaker.answer("follow_up_email"),
                     sagemaker.model_error())
    openai_server.script(openai_server.answer("none"))

    sure = assert_decision(invoke(route_body()), task="follow_up_email", event="start", backend="sagemaker",
                           fallback_reason=None)
    assert sure["confidence"] == pytest.approx(_confidence(DOUBTFUL))
    assert sagemaker.requests[0].json()["logprobs"] is True  # asked of the endpoint
    no_logprobs = invoke(route_body()).json()
    assert (no_logprobs["backend"], no_logprobs["confidence"]) == ("sagemaker", None)
    failed = invoke(route_body()).json()
    assert (failed["backend"], failed["fallback_reason"], failed["confidence"]) == ("openai", "error", None)


def test_an_answer_under_the_threshold_is_escalated_logged_and_counted(
    invoke: Invoke, router_env: pytest.MonkeyPatch, aws: AwsState, sagemaker: SageMakerRuntimeDouble,
    openai_server: OpenAIDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    threshold = (_confidence(SURE) + _confidence(DOUBTFUL)) / 2
    entry = {"strategy": "zero_shot", "adapter": "base", "threshold": threshold, "tasks_sha256": "0" * 64}
    router_env.setenv("TASKROUTER_CONFIDENCE_THRESHOLDS", json.dumps([entry]))
    sagemaker.script(sagemaker.answer("follow_up_email", logprobs=SURE), sagemaker.answer("follow_up_email", logprobs=DOUBTFUL))
    openai_server.script(openai_server.answer("prepare_linkedin_post"))
    capsys.readouterr()

    kept = assert_decision(invoke(route_body()), task="follow_up_email", event="start", backend="sagemaker",
                           fallback_reason=None)
    escalated = assert_decision(invoke(route_body()), task="prepare_linkedin_post", event="start", backend="openai",
                                fallback_reason="low_confidence")
    assert kept["confidence"] == pytest.approx(_confidence(SURE))
    assert escalated["confidence"] == pytest.approx(_confidence(DOUBTFUL))  # the primary's, kept beside
    out = capsys.readouterr().out
    routed = [line for line in _log_lines(out) if line.get("message") == "routed"]
    assert [(line["primary_answer"], line["threshold"], line["threshold_registry_differs"]) for line in routed] == [
        ("follow_up_email", threshold, True), ("follow_up_email", threshold, True)]  # calibrated on another list
    assert "Dana" not in out  # the conversation is never logged
    escalations = _metric_values(_emf_documents(out), "Escalated")
    assert escalations == [({"service": "taskrouter-router", "adapter": "base", "strategy": "zero_shot"}, [0.0]),
                           ({"service": "taskrouter-router", "adapter": "base", "strategy": "zero_shot"}, [1.0])]
