"""The HTTP doubles answer as the real services do, as far as the real clients can tell."""

from __future__ import annotations

import json

import boto3
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from .conftest import COMPONENT_NAME
from .servers import OpenAIDouble, SageMakerRuntimeDouble


@pytest.fixture
def sagemaker_client(sagemaker: SageMakerRuntimeDouble):
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client(
        "sagemaker-runtime",
        endpoint_url=sagemaker.url,
        config=Config(connect_timeout=0.2, read_timeout=0.2, retries={"total_max_attempts": 1}),
    )


CHAT = {
    "messages": [{"role": "system", "content": "route"}, {"role": "user", "content": "hi"}],
    "max_completion_tokens": 8,
    "temperature": 0.0,
    "structured_outputs": {"choice": ["follow_up_email", "none"]},
}


def _invoke(client, body=CHAT, content_type="application/json", **extra):
    return client.invoke_endpoint(
        EndpointName="my endpoint/1", ContentType=content_type, Body=json.dumps(body).encode(), **extra
    )


def test_sagemaker_answer_and_recording(sagemaker: SageMakerRuntimeDouble, sagemaker_client) -> None:
    sagemaker.script(sagemaker.answer("follow_up_email"), sagemaker.answer("none"))

    response = _invoke(sagemaker_client, InferenceComponentName=COMPONENT_NAME)
    base = _invoke(sagemaker_client)

    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    completion = json.loads(response["Body"].read())
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "follow_up_email"
    assert completion["model"] == COMPONENT_NAME  # LMI names the adapter it routed to...
    assert json.loads(base["Body"].read())["model"] == "lmi"  # ...or its served base model
    request = sagemaker.requests[0]
    assert SageMakerRuntimeDouble.endpoint_of(request) == "my endpoint/1"
    assert SageMakerRuntimeDouble.component_of(request) == COMPONENT_NAME
    assert request.json() == CHAT and sagemaker.refusals == []


# What LMI 0.36.0-lmi18 (vLLM 0.12.0) refuses, or would silently mishandle; sources in the double's docstring.
REFUSED = {
    "tgi_inputs": ({"inputs": "hi", "parameters": {"max_new_tokens": 8}}, {}),  # vllm_async_service.py:178-184
    "completions_prompt": ({**CHAT, "prompt": "hi"}, {}),  # :172-176, `prompt` is routed first
    "text_plain": (CHAT, {"content_type": "text/plain"}),  # encode_decode.py:63-77
    "retired_guided_choice": ({**CHAT, "guided_choice": ["a"]}, {}),  # gone in vLLM 0.12 (protocol.py)
    "two_constraints": ({**CHAT, "structured_outputs": {"choice": ["a"], "regex": "a"}}, {}),  # protocol.py:866-896
    "unknown_constraint_field": ({**CHAT, "structured_outputs": {"choices": ["a"]}}, {}),  # sampling_params.py:31-68
    "empty_choice": ({**CHAT, "structured_outputs": {"choice": []}}, {}),  # input_processor.py:251-345
    "unknown_model": ({**CHAT, "model": "qwen"}, {}),  # serving_engine.py:772-799
    "messages_not_a_list": ({**CHAT, "messages": "hi"}, {}),
    "generation_prompt_and_continue": ({**CHAT, "add_generation_prompt": True, "continue_final_message": True}, {}),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_sagemaker_refuses_what_the_container_would_not_take(
    sagemaker: SageMakerRuntimeDouble, sagemaker_client, case: str
) -> None:
    body, extra = REFUSED[case]
    sagemaker.script(sagemaker.answer("follow_up_email"))

    with pytest.raises(ClientError) as caught:
        _invoke(sagemaker_client, body, **extra)

    assert caught.value.response["Error"]["Code"] == "ModelError"
    assert len(sagemaker.refusals) == 1


def test_sagemaker_refuses_a_component_the_endpoint_does_not_host(sagemaker: SageMakerRuntimeDouble, sagemaker_client) -> None:
    with pytest.raises(ClientError) as caught:  # SageMaker's own refusal, before any container
        _invoke(sagemaker_client, InferenceComponentName="not-hosted")

    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(sagemaker.refusals) == 1


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (SageMakerRuntimeDouble.model_error(), 424, "ModelError"),
        (SageMakerRuntimeDouble.internal_failure(), 500, "InternalFailure"),
        (SageMakerRuntimeDouble.throttling(), 400, "ThrottlingException"),
        (SageMakerRuntimeDouble.too_many_requests(), 429, "429"),
    ],
)
def test_sagemaker_errors_parse_as_botocore_client_errors(
    sagemaker: SageMakerRuntimeDouble, sagemaker_client, reply, status: int, code: str
) -> None:
    sagemaker.script(reply)

    with pytest.raises(ClientError) as caught:
        _invoke(sagemaker_client)

    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    if code == "ModelError":
        assert caught.value.response["OriginalStatusCode"] == 500
    assert len(sagemaker.requests) == 1


def test_sagemaker_delay_trips_the_read_timeout(sagemaker: SageMakerRuntimeDouble, sagemaker_client) -> None:
    sagemaker.script(sagemaker.answer("late", delay_s=5.0))

    with pytest.raises(ReadTimeoutError):
        _invoke(sagemaker_client)


@pytest.fixture
def openai_client(openai_server: OpenAIDouble) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-double", base_url=openai_server.base_url, max_retries=0, timeout=0.3)


def _complete(client: openai.OpenAI):
    return client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}])


def test_openai_completion_parses(openai_server: OpenAIDouble, openai_client: openai.OpenAI) -> None:
    openai_server.script(openai_server.answer("follow_up_email"), openai_server.answer(None))

    first, second = _complete(openai_client), _complete(openai_client)

    assert first.object == "chat.completion"
    assert first.choices[0].message.content == '{"task": "follow_up_email"}'
    assert first.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == '{"task": "none"}'
    assert [r.header("Authorization") for r in openai_server.requests] == ["Bearer sk-double"] * 2
    assert openai_server.requests[0].json()["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (OpenAIDouble.server_error(), openai.InternalServerError),
        (OpenAIDouble.rate_limited(), openai.RateLimitError),
        (OpenAIDouble.answer("x", delay_s=5.0), openai.APITimeoutError),
    ],
)
def test_openai_errors_raise_the_client_exceptions(
    openai_server: OpenAIDouble, openai_client: openai.OpenAI, reply, error
) -> None:
    openai_server.script(reply)

    with pytest.raises(error):
        _complete(openai_client)
