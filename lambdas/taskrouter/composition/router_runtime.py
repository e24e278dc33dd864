"""Builds the router, and its capture, from the environment once per container (Lambda or local
server), at start-up: clients are created, `openai` imported and the fallback's key read before the
first request."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.config import Config

from taskrouter.adapters.capture_sink import LambdaCaptureSink
from taskrouter.adapters.capture_switch import AlwaysOn, CaptureSwitch, SsmCaptureSwitch
from taskrouter.adapters.dynamodb_registry import DynamoDBTaskSource
from taskrouter.adapters.openai_backend import OpenAIBackend
from taskrouter.adapters.refreshed_secret import RefreshedSecret
from taskrouter.adapters.sagemaker_backend import SageMakerBackend
from taskrouter.adapters.settings import (
    REGISTRY_CONNECT_TIMEOUT_S,
    REGISTRY_READ_TIMEOUT_S,
    CaptureSettings,
    RuntimeSettings,
    serving_adapter_from_env,
)
from taskrouter.adapters.ssm_ops_mode import SsmOpsMode
from taskrouter.core.capture import ServingAdapter
from taskrouter.core.request import Strategy
from taskrouter.core.resilience import CircuitBreaker
from taskrouter.core.router import Router
from taskrouter.core.tasks import RegistryUnavailable, TaskSource

_SECRET_MAX_AGE_S = 300
logger = logging.getLogger(__name__)


@functools.cache
def router() -> Router:
    """The container's router, from the environment."""
    return build_router(RuntimeSettings.from_env())


def build_router(
    settings: RuntimeSettings, registry: TaskSource | None = None, concurrent_requests: int = 1
) -> Router:
    """A router from `settings`, its registry the settings' DynamoDB table unless one is given (the
    evaluation's task file), for `concurrent_requests` callers at once (one in a Lambda container)."""
    # botocore's own session: the same clients, credentials and AWS_ENDPOINT_URL_* handling as
    # boto3's, without importing boto3 itself on the cold start.
    session = botocore.session.get_session()
    if registry is None:
        # One bounded try: a miss is covered by the cached copy.
        registry_client = session.create_client(
            "dynamodb",
            config=Config(
                connect_timeout=REGISTRY_CONNECT_TIMEOUT_S,
                read_timeout=REGISTRY_READ_TIMEOUT_S,
                retries={"total_max_attempts": 1},
            ),
        )
        registry = DynamoDBTaskSource(registry_client, settings.table_name, settings.registry_ttl_s)
    primary = None
    if settings.sagemaker_endpoint:
        timeouts = {budget.primary_timeout_s for budget in settings.router.strategy_budgets.values()}
        clients = {
            # One try, bounded on connect and on read: the fallback, not a retry, covers a miss.
            timeout_s: session.create_client(
                "sagemaker-runtime",
                config=Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"total_max_attempts": 1}),
            )
            for timeout_s in timeouts
        }
        primary = SageMakerBackend(clients, settings.sagemaker_endpoint, settings.sagemaker_component)
    fallback = None
    if settings.openai_configured:
        fallback = OpenAIBackend(
            settings.openai_model, api_key_reader(session, settings.openai_secret_arn), settings.openai_response_format
        )
        fallback.warm()
    ops_mode = None
    if settings.ops_mode_parameter:
        ssm = session.create_client(
            "ssm", config=Config(connect_timeout=0.5, read_timeout=0.5, retries={"total_max_attempts": 1})
        )
        name = settings.ops_mode_parameter
        ops_mode = SsmOpsMode(lambda: ssm.get_parameter(Name=name)["Parameter"]["Value"])
    breakers = {
        strategy: CircuitBreaker(settings.breaker_failures, settings.breaker_window_s, settings.breaker_cooldown_s)
        for strategy in Strategy
    }
    with contextlib.suppress(RegistryUnavailable):  # the first request reads it, should this read fail
        registry.tasks()  # the task list, fetched at start-up like the clients: not by the first request
    return Router(
        registry, primary, fallback, settings.router,
        breakers=breakers, ops_mode=ops_mode, concurrent_requests=concurrent_requests,
    )


def api_key_reader(session: Any, secret_arn: str | None) -> Callable[[], str | None]:
    """The OpenAI key from Secrets Manager, held and re-read in the background (a rotated key is taken
    up within `_SECRET_MAX_AGE_S`); its client is bounded like every other, so an unreachable Secrets
    Manager costs the start-up a few seconds at most, never a request."""
    if secret_arn is None:
        return lambda: None
    client = session.create_client(
        "secretsmanager", config=Config(connect_timeout=1, read_timeout=1, retries={"total_max_attempts": 2})
    )
    return RefreshedSecret(lambda: client.get_secret_value(SecretId=secret_arn)["SecretString"], _SECRET_MAX_AGE_S)


@dataclass(frozen=True)
class Capture:
    """The container's capture (docs/capture.md): what it samples and redacts, where it sends."""

    settings: CaptureSettings
    adapter: ServingAdapter
    sink: LambdaCaptureSink
    switch: CaptureSwitch
    random: Callable[[], float]  # uniform in [0, 1), for the sampling draws


@functools.cache
def serving_adapter() -> ServingAdapter:
    """The adapter the primary serves, for the `UnseenTasks` metric and the captured records."""
    return serving_adapter_from_env(os.environ)


@functools.cache
def capture() -> Capture | None:
    """The container's capture, from the environment; None when no teacher function is named."""
    return build_capture(RuntimeSettings.from_env())


def build_capture(settings: RuntimeSettings) -> Capture | None:
    """The sender and the kill switch, built at start-up: the `lambda` client (its timeouts the send
    bound, one try), one dry-run invocation that resolves the endpoint, signs, connects and checks the
    permission before any request pays for it, and the switch's first read."""
    config = settings.capture
    if config.function_name is None:
        return None
    session = botocore.session.get_session()
    bounded = Config(
        connect_timeout=config.send_timeout_s, read_timeout=config.send_timeout_s, retries={"total_max_attempts": 1}
    )
    client = session.create_client("lambda", config=bounded)
    try:
        client.invoke(FunctionName=config.function_name, InvocationType="DryRun", Payload=b"{}")
    except Exception as error:  # said at start; each request's send is still tried, and counted when dropped
        logger.warning("capture: the teacher function's dry run failed (%s)", type(error).__name__)
    switch: CaptureSwitch = AlwaysOn()
    if config.switch_parameter:
        ssm = session.create_client("ssm", config=bounded)
        name = config.switch_parameter
        switch = SsmCaptureSwitch(lambda: ssm.get_parameter(Name=name)["Parameter"]["Value"])
        switch.is_on()  # the first read at start-up, not in a request
    return Capture(config, settings.adapter, LambdaCaptureSink(client, config.function_name), switch, random.Random().random)
