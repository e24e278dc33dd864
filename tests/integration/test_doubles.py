"""The HTTP doubles answer as the real services do, as far as the real clients can tell."""

from __future__ import annotations


import boto3
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

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


def _invoke(client, **extra):
    return client.invoke_endpoint(
        EndpointName="my endpoint/1", ContentType="application/json", Body=b'{"inputs": "hi"}', **extra
    )


def test_sagemaker_answer_and_recording(sagemaker: SageMakerRuntimeDouble, sagemaker_client) -> None:
    sagemaker.script(sagemaker.answer("follow_up_email"))

    response = _invoke(sagemaker_client, InferenceComponentName="adapter-1")

    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["Body"].read() == b'{"generated_text": "follow_up_email"}'
    (request,) = sagemaker.requests
    assert SageMakerRuntimeDouble.endpoint_of(request) == "my endpoint/1"
    assert SageMakerRuntimeDouble.component_of(request) == "adapter-1"
    assert request.json() == {"inputs": "hi"}


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
