"""Builds the router from the environment once per container (Lambda or local server), at start-up:
clients are created, `openai` imported and the fallback's key read before the first request."""

from __future__ import annotations

import contextlib
import functools

import botocore.session
from botocore.config import Config

from taskrouter.adapters.dynamodb_registry import DynamoDBTaskSource
from taskrouter.adapters.openai_backend import OpenAIBackend
from taskrouter.adapters.sagemaker_backend import SageMakerBackend
from taskrouter.adapters.settings import REGISTRY_CONNECT_TIMEOUT_S, REGISTRY_READ_TIMEOUT_S, RuntimeSettings
from taskrouter.adapters.ssm_ops_mode import SsmOpsMode
from taskrouter.core.resilience import CircuitBreaker
from taskrouter.core.tasks import RegistryUnavailable
from taskrouter.core.router import Router

_SECRET_MAX_AGE_S = 300


@functools.cache
def router() -> Router:
    settings = RuntimeSettings.from_env()
    # botocore's own session: the same clients, credentials and AWS_ENDPOINT_URL_* handling as
    # boto3's, without importing boto3 itself on the cold start.
    session = botocore.session.get_session()
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
        fallback = OpenAIBackend(settings.openai_model, _api_key_reader(settings.openai_secret_arn))
        fallback.warm()
    ops_mode = None
    if settings.ops_mode_parameter:
        ssm = session.create_client(
            "ssm", config=Config(connect_timeout=0.5, read_timeout=0.5, retries={"total_max_attempts": 1})
        )
        name = settings.ops_mode_parameter
        ops_mode = SsmOpsMode(lambda: ssm.get_parameter(Name=name)["Parameter"]["Value"])
    breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_window_s, settings.breaker_cooldown_s)
    with contextlib.suppress(RegistryUnavailable):  # the first request reads it, should this read fail
        registry.tasks()  # the task list, fetched at start-up like the clients: not by the first request
    return Router(registry, primary, fallback, settings.router, breaker=breaker, ops_mode=ops_mode)


def _api_key_reader(secret_arn: str | None):
    """The OpenAI key from Secrets Manager, cached `_SECRET_MAX_AGE_S` (a rotated key is seen within).
    Its client is bounded like every other: an unreachable Secrets Manager costs the init phase (and
    a later fallback) at most a few seconds, never the Lambda's start."""
    if secret_arn is None:
        return lambda: None
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # at start-up, not in a request

    provider = SecretsProvider(
        boto_config=Config(connect_timeout=1, read_timeout=1, retries={"total_max_attempts": 2})
    )
    return lambda: provider.get(secret_arn, max_age=_SECRET_MAX_AGE_S)
