"""Fixtures of the router Lambda's integration tests.

The handler runs in-process against real clients: DynamoDB and Secrets Manager on a moto server,
SageMaker runtime and OpenAI on the HTTP doubles of `servers.py`. Everything binds 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from taskrouter.composition import router_runtime

from .apigw import LambdaContext, route_event
from .servers import OpenAIDouble, SageMakerRuntimeDouble

REGION = "us-east-1"
TABLE_NAME = "taskrouter-test-tasks"
ENDPOINT_NAME = "taskrouter-test-endpoint"
COMPONENT_NAME = "taskrouter-test-adapter"
OPENAI_KEY = "sk-test-integration-7f3c9a"
PRIMARY_TIMEOUT_MS = 2000  # generous: a loaded CI machine (two workers, a real model on one) must not turn a quick answer into a timeout
FALLBACK_TIMEOUT_MS = 5000  # room for the one retry even on a loaded machine (openai loads on first use)

TASKS: dict[str, tuple[str, list[str]]] = {
    "prepare_meeting_minutes": (
        "Turn a call or meeting the user had into written minutes: attendees, decisions, action items.",
        ["Write up the minutes of my call with Acme", "Summarise the meeting we just had"],
    ),
    "follow_up_email": (
        "Draft a follow-up email to a prospect or customer after a call or meeting.",
        ["Send Dana a follow-up about pricing"],
    ),
    "prepare_linkedin_post": (
        "Write a LinkedIn post for the user from a topic, an event or a win.",
        [],
    ),
    "structure_ideas_into_doc": (
        "Organise loose notes and ideas into a structured document with headings.",
        ["Turn these bullet points into a doc"],
    ),
    "create_one_minute_pitch": (
        "Write a one-minute spoken pitch of a product or offer for a given audience.",
        [],
    ),
}
TASK_NAMES = tuple(sorted(TASKS))

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- servers (one each for the session, reset before every test) ------------------------------------
@pytest.fixture(scope="session")
def _moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def _sagemaker_double() -> Iterator[SageMakerRuntimeDouble]:
    double = SageMakerRuntimeDouble(adapters=(COMPONENT_NAME,))
    yield double
    double.close()


@pytest.fixture(scope="session")
def _openai_double() -> Iterator[OpenAIDouble]:
    double = OpenAIDouble()
    yield double
    double.close()


@pytest.fixture
def sagemaker(_sagemaker_double: SageMakerRuntimeDouble) -> Iterator[SageMakerRuntimeDouble]:
    _sagemaker_double.reset()
    yield _sagemaker_double
    _sagemaker_double.reset()


@pytest.fixture
def openai_server(_openai_double: OpenAIDouble) -> Iterator[OpenAIDouble]:
    _openai_double.reset()
    yield _openai_double
    _openai_double.reset()


# -- AWS state on moto -----------------------------------------------------------------------------
@dataclass
class AwsState:
    endpoint_url: str
    table_name: str
    secret_arn: str
    dynamodb: Any  # boto3 clients on moto
    secretsmanager: Any

    def put_task(self, name: str, description: str, examples: list[str] | None = None, version: int = 1) -> None:
        self.dynamodb.put_item(TableName=self.table_name, Item=task_item(name, description, examples or [], version))


def task_item(name: str, description: str, examples: list[str], version: int = 1) -> dict[str, Any]:
    return {
        "pk": {"S": "TASK"},
        "sk": {"S": name},
        "name": {"S": name},
        "description": {"S": description},
        "examples": {"L": [{"S": example} for example in examples]},
        "version": {"N": str(version)},
        "updated_at": {"S": "2025-04-09T12:00:00Z"},
    }


@pytest.fixture(scope="session")
def _moto_clients(_moto_server: str) -> tuple[Any, Any]:
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    return session.client("dynamodb", endpoint_url=_moto_server), session.client("secretsmanager", endpoint_url=_moto_server)


@pytest.fixture
def aws(_moto_server: str, _moto_clients: tuple[Any, Any]) -> AwsState:
    """A fresh moto: the seeded task table and the OpenAI key's secret."""
    _NO_PROXY.open(urllib.request.Request(f"{_moto_server}/moto-api/reset", method="POST"), timeout=10).read()
    dynamodb, secretsmanager = _moto_clients
    dynamodb.create_table(
        TableName=TABLE_NAME,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for name, (description, examples) in TASKS.items():
        dynamodb.put_item(TableName=TABLE_NAME, Item=task_item(name, description, examples))
    secret = secretsmanager.create_secret(Name="taskrouter/test/openai-api-key", SecretString=OPENAI_KEY)
    return AwsState(_moto_server, TABLE_NAME, secret["ARN"], dynamodb, secretsmanager)


# -- the handler's environment ---------------------------------------------------------------------
def _clear_router_caches() -> None:
    router_runtime.router.cache_clear()  # its secret reader, and the reader's cache, go with it


@pytest.fixture
def router_env(
    monkeypatch: pytest.MonkeyPatch,
    aws: AwsState,
    sagemaker: SageMakerRuntimeDouble,
    openai_server: OpenAIDouble,
) -> Iterator[pytest.MonkeyPatch]:
    """The Lambda's environment, pointed at moto and the doubles; the router is built afresh."""
    for name in (
        "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL",
        "OPENAI_API_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_WEBHOOK_SECRET",
        "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
        "TASKROUTER_DEFAULT_STRATEGY", "TASKROUTER_PROMPT_FORMAT", "TASKROUTER_OPENAI_MODEL",
        "TASKROUTER_REGISTRY_TTL_S", "TASKROUTER_RETRY_AFTER_S", "POWERTOOLS_LOGGER_LOG_EVENT",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AWS_ENDPOINT_URL_DYNAMODB": aws.endpoint_url,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": aws.endpoint_url,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": sagemaker.url,
        "OPENAI_BASE_URL": openai_server.base_url,
        "TASKROUTER_TABLE_NAME": aws.table_name,
        "TASKROUTER_SAGEMAKER_ENDPOINT": ENDPOINT_NAME,
        "TASKROUTER_SAGEMAKER_COMPONENT": COMPONENT_NAME,
        "TASKROUTER_OPENAI_SECRET_ARN": aws.secret_arn,
        "TASKROUTER_PRIMARY_TIMEOUT_MS": str(PRIMARY_TIMEOUT_MS),
        "TASKROUTER_FALLBACK_TIMEOUT_MS": str(FALLBACK_TIMEOUT_MS),
        "TASKROUTER_HEDGE_AFTER_MS": "off",  # hedging is the unit tests' (it races real clocks)
        "POWERTOOLS_SERVICE_NAME": "taskrouter-router",
        "POWERTOOLS_METRICS_NAMESPACE": "TaskRouter",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _clear_router_caches()
    yield monkeypatch
    _clear_router_caches()


# -- invoking the handler --------------------------------------------------------------------------
@dataclass
class HttpResult:
    """The Lambda's proxy response, decoded."""

    status: int
    headers: dict[str, str]  # single-valued view; `multi_headers` keeps the lists
    multi_headers: dict[str, list[str]]
    raw_body: str
    is_base64: bool
    event: dict[str, Any]

    def json(self) -> Any:
        return json.loads(self.raw_body)

    @property
    def request_id(self) -> str:
        return self.event["requestContext"]["requestId"]


def decode_response(response: dict[str, Any], event: dict[str, Any]) -> HttpResult:
    multi: dict[str, list[str]] = {name: list(values) for name, values in (response.get("multiValueHeaders") or {}).items()}
    for name, value in (response.get("headers") or {}).items():
        multi.setdefault(name, [value])
    return HttpResult(
        status=response["statusCode"],
        headers={name: ",".join(values) for name, values in multi.items()},
        multi_headers=multi,
        raw_body=response.get("body") or "",
        is_base64=bool(response.get("isBase64Encoded")),
        event=event,
    )


Invoke = Callable[..., HttpResult]


class _CurrentStdout:
    """A stream that writes to the sys.stdout of the moment (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def invoke(router_env: pytest.MonkeyPatch) -> Invoke:
    """`invoke(body, overrides=None, **route_event_kwargs)`: one API Gateway request through the handler."""
    from taskrouter.handlers import router as router_handler

    # Powertools' Logger keeps the sys.stdout of its creation (possibly another test's capture, since
    # closed): make it write to whatever sys.stdout is at the time, so capsys sees the handler's logs.
    router_handler.logger.registered_handler.setStream(_CurrentStdout())
    # the handler's first import builds a router (the init phase) before the test's own setup: start
    # each test from a router built on its own state
    _clear_router_caches()

    def call(body: Any, *, overrides: dict[str, Any] | None = None, **kwargs: Any) -> HttpResult:
        event = route_event(body, **kwargs)
        event.update(overrides or {})  # e.g. a field as API Gateway would never send it
        response = router_handler.handler(event, LambdaContext())
        assert isinstance(response, dict), response
        return decode_response(response, event)

    return call
