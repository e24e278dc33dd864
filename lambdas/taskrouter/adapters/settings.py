"""Runtime settings from the environment: the same names in the Lambda and in local mode."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from taskrouter.adapters.structured_output import ResponseFormat
from taskrouter.core.capture import BASE_ADAPTER, SamplingPolicy, ServingAdapter
from taskrouter.core.redaction import DEFAULT_REDACTION, REDACTION_KINDS
from taskrouter.adapters.served_tokenizer import TokenizerUnavailable, token_counter
from taskrouter.core.catalogue import CatalogueBudget, byte_budget, token_budget
from taskrouter.core.confidence import ThresholdsError, parse_thresholds, thresholds_for
from taskrouter.core.prompting import transcript_bound
from taskrouter.core.request import Strategy
from taskrouter.core.resilience import DEFAULT_COOLDOWN_S, DEFAULT_FAILURES, DEFAULT_WINDOW_S
from taskrouter.core.router import Budget, Explanations, RouterSettings, Threshold
from taskrouter.core.tasks import check_task_name

# Bounds shared with the stage configuration (infra/config.py), in milliseconds.
PRIMARY_TIMEOUT_MS = (10, 10_000)
FALLBACK_TIMEOUT_MS = (100, 20_000)
# Each strategy's (primary, fallback) timeouts when the environment names none, in milliseconds.
# Zero-shot's fit the 300 ms decision; the others reason before answering (model_artifacts/README.md).
DEFAULT_TIMEOUTS_MS = {
    Strategy.ZERO_SHOT: (250, 3000),
    Strategy.FEW_SHOT_COT: (1000, 5000),
    Strategy.REACT: (1600, 5000),
}
DEFAULT_RETRY_AFTER_S = 2
# The router's registry read: one try, bounded (infra sizes the function's timeout with them).
REGISTRY_CONNECT_TIMEOUT_S = 1
REGISTRY_READ_TIMEOUT_S = 1
DEFAULT_HEDGE_AFTER_MS = 150
DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"  # the official client's, when OPENAI_BASE_URL is unset
OPENAI_RESPONSE_FORMAT = "TASKROUTER_OPENAI_RESPONSE_FORMAT"


class SettingsError(ValueError):
    """An environment variable holds a value the router cannot use."""


# -- capture (docs/capture.md) ---------------------------------------------------------------------
CAPTURE_SEND_TIMEOUT_MS = (10, 1000)
DEFAULT_CAPTURE_SEND_TIMEOUT_MS = 100
_NO_REDACTION = "none"


@dataclass(frozen=True)
class CaptureSettings:
    """Which turns the router captures and how it sends them to the teacher function."""

    function_name: str | None = None  # the teacher function (name or ARN); None: capture is off
    policy: SamplingPolicy = SamplingPolicy(share=1.0, fallback_share=1.0)
    redaction: tuple[str, ...] = DEFAULT_REDACTION
    send_timeout_s: float = DEFAULT_CAPTURE_SEND_TIMEOUT_MS / 1000  # connect and read, one try
    switch_parameter: str | None = None  # SSM parameter of the kill switch; None: always on

    @property
    def enabled(self) -> bool:
        return self.function_name is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CaptureSettings:
        """Every capture variable is checked, even with capture off: a bad value is said at start."""
        return cls(
            function_name=env.get("TASKROUTER_CAPTURE_FUNCTION") or None,
            policy=SamplingPolicy(
                share=number_setting(env, "TASKROUTER_CAPTURE_SHARE", 1, 0, 1),
                fallback_share=number_setting(env, "TASKROUTER_CAPTURE_FALLBACK_SHARE", 1, 0, 1),
                unseen_share=number_setting(env, "TASKROUTER_CAPTURE_UNSEEN_SHARE", 1, 0, 1),
            ),
            redaction=_redaction(env),
            send_timeout_s=number_setting(
                env, "TASKROUTER_CAPTURE_SEND_TIMEOUT_MS", DEFAULT_CAPTURE_SEND_TIMEOUT_MS, *CAPTURE_SEND_TIMEOUT_MS
            ) / 1000,
            switch_parameter=env.get("TASKROUTER_CAPTURE_PARAMETER") or None,
        )


def _redaction(env: Mapping[str, str]) -> tuple[str, ...]:
    """TASKROUTER_CAPTURE_REDACT: kinds separated by commas (`email,phone`), or `none`."""
    raw = env.get("TASKROUTER_CAPTURE_REDACT") or ""
    if not raw.strip():
        return DEFAULT_REDACTION
    kinds = [kind.strip().lower() for kind in raw.split(",")]
    if kinds == [_NO_REDACTION]:
        return ()
    if not all(kind in REDACTION_KINDS for kind in kinds):
        allowed = ", ".join(REDACTION_KINDS)
        raise SettingsError(f"TASKROUTER_CAPTURE_REDACT must be {_NO_REDACTION!r} or some of {allowed}, got {raw!r}")
    return tuple(kind for kind in REDACTION_KINDS if kind in kinds)


def serving_adapter_from_env(env: Mapping[str, str]) -> ServingAdapter:
    """TASKROUTER_ADAPTER_NAME (`base`: the base model alone) and TASKROUTER_ADAPTER_TASKS, the task
    names of its manifest separated by commas (unset: not known, so no task counts as unseen)."""
    name = env.get("TASKROUTER_ADAPTER_NAME") or BASE_ADAPTER
    raw = env.get("TASKROUTER_ADAPTER_TASKS") or ""
    if not raw.strip():
        return ServingAdapter(name)
    names = [part.strip() for part in raw.split(",") if part.strip()]
    for task in names:
        try:
            check_task_name(task)
        except ValueError as error:
            raise SettingsError(f"TASKROUTER_ADAPTER_TASKS: {task[:80]!r} is no task name: {error}") from None
    return ServingAdapter(name, frozenset(names))


@dataclass(frozen=True)
class RuntimeSettings:
    table_name: str
    sagemaker_endpoint: str | None
    sagemaker_component: str | None
    openai_model: str
    openai_secret_arn: str | None  # in AWS the key comes from Secrets Manager, never the environment
    openai_configured: bool
    registry_ttl_s: float
    ops_mode_parameter: str | None  # SSM parameter holding the operations mode; None: primary_first
    breaker_failures: int
    breaker_window_s: float
    breaker_cooldown_s: float
    router: RouterSettings
    openai_response_format: ResponseFormat = ResponseFormat.JSON_SCHEMA
    adapter: ServingAdapter = ServingAdapter()  # what the primary serves, for its unseen tasks
    capture: CaptureSettings = CaptureSettings()  # docs/capture.md; off unless a teacher function is named

    @staticmethod
    def table_name_from_env(environ: Mapping[str, str] | None = None) -> str:
        return _required(os.environ if environ is None else environ, "TASKROUTER_TABLE_NAME")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        env = os.environ if environ is None else environ
        secret_arn = env.get("TASKROUTER_OPENAI_SECRET_ARN") or None
        budgets = _budgets(env)
        zero_shot = budgets[Strategy.ZERO_SHOT]
        adapter = serving_adapter_from_env(env)
        return cls(
            table_name=cls.table_name_from_env(env),
            sagemaker_endpoint=env.get("TASKROUTER_SAGEMAKER_ENDPOINT") or None,
            sagemaker_component=env.get("TASKROUTER_SAGEMAKER_COMPONENT") or None,
            openai_model=env.get("TASKROUTER_OPENAI_MODEL", DEFAULT_OPENAI_MODEL),
            openai_secret_arn=secret_arn,
            # Locally the official client reads OPENAI_API_KEY / OPENAI_BASE_URL itself.
            openai_configured=bool(secret_arn or env.get("OPENAI_API_KEY")),
            registry_ttl_s=number_setting(env, "TASKROUTER_REGISTRY_TTL_S", 15, 0, 25),
            ops_mode_parameter=env.get("TASKROUTER_OPS_MODE_PARAMETER") or None,
            breaker_failures=int(number_setting(env, "TASKROUTER_BREAKER_FAILURES", DEFAULT_FAILURES, 1, 1000)),
            breaker_window_s=number_setting(env, "TASKROUTER_BREAKER_WINDOW_S", DEFAULT_WINDOW_S, 1, 3600),
            breaker_cooldown_s=number_setting(env, "TASKROUTER_BREAKER_COOLDOWN_S", DEFAULT_COOLDOWN_S, 1, 3600),
            router=RouterSettings(
                default_strategy=Strategy(
                    _choice(env, "TASKROUTER_DEFAULT_STRATEGY", "zero_shot", tuple(s.value for s in Strategy))
                ),
                primary_timeout_s=zero_shot.primary_timeout_s,
                fallback_timeout_s=zero_shot.fallback_timeout_s,
                hedge_after_s=zero_shot.hedge_after_s,
                retry_after_s=int(number_setting(env, "TASKROUTER_RETRY_AFTER_S", DEFAULT_RETRY_AFTER_S, 1, 3600)),
                strategy_budgets=budgets,
                explanations=_explanations(env),
                catalogue_budget=catalogue_budget_from_env(env),
                transcript=transcript_bound(serving_tokens_from_env(env)),
                thresholds=thresholds_from_env(env, adapter.name),
            ),
            openai_response_format=openai_response_format_from_env(env),
            adapter=adapter,
            capture=CaptureSettings.from_env(env),
        )


def openai_response_format_from_env(environ: Mapping[str, str] | None = None) -> ResponseFormat:
    """The structured-output dialect of the OpenAI-compatible server (adapters/structured_output.py),
    for the fallback and `data generate` alike."""
    env = os.environ if environ is None else environ
    allowed = tuple(dialect.value for dialect in ResponseFormat)
    return ResponseFormat(_choice(env, OPENAI_RESPONSE_FORMAT, ResponseFormat.JSON_SCHEMA.value, allowed))


CONFIDENCE_THRESHOLDS = "TASKROUTER_CONFIDENCE_THRESHOLDS"


def thresholds_from_env(env: Mapping[str, str], adapter: str) -> dict[Strategy, Threshold]:
    """TASKROUTER_CONFIDENCE_THRESHOLDS: a JSON list of `{"strategy", "adapter", "threshold",
    "tasks_sha256"}` as `taskrouter eval threshold` prints them (the stack writes the stage's); the
    entries of the serving adapter (TASKROUTER_ADAPTER_NAME, `base` by default) apply. Unset or empty:
    no threshold, nothing escalated."""
    raw = env.get(CONFIDENCE_THRESHOLDS) or ""
    if not raw.strip():
        return {}
    try:
        entries = parse_thresholds(raw)
    except ThresholdsError as error:
        raise SettingsError(f"{CONFIDENCE_THRESHOLDS}: {error}") from None
    return {strategy: Threshold(value, digest) for strategy, (value, digest) in thresholds_for(entries, adapter).items()}


SERVING_MAX_TOKENS = "TASKROUTER_SERVING_MAX_TOKENS"
SERVING_TOKENIZER = "TASKROUTER_SERVING_TOKENIZER"
# The serving lengths the catalogue budget takes: measured in bytes, what the prompt's worst case needs
# to leave room for a catalogue; in tokens, any context that leaves it some (checked below).
_SERVING_MAX_TOKENS_BOUNDS = (16_384, 1_048_576)
_SERVING_MAX_TOKENS_BOUNDS_IN_TOKENS = (1_024, 1_048_576)


def serving_tokens_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """The model's serving length in tokens (TASKROUTER_SERVING_MAX_TOKENS: the stack sets it from
    model_artifacts/serving.json, make local from its local model); None when unset."""
    env = os.environ if environ is None else environ
    if not env.get(SERVING_MAX_TOKENS):
        return None
    bounds = _SERVING_MAX_TOKENS_BOUNDS_IN_TOKENS if env.get(SERVING_TOKENIZER) else _SERVING_MAX_TOKENS_BOUNDS
    return int(number_setting(env, SERVING_MAX_TOKENS, 0, *bounds))


def catalogue_budget_from_env(environ: Mapping[str, str] | None = None) -> CatalogueBudget | None:
    """The task catalogue's budget, derived from the serving length: in tokens of the served model's
    tokenizer when TASKROUTER_SERVING_TOKENIZER names one (make local with a local model), else in
    rendered bytes; None when no serving length is set: no budget is enforced."""
    env = os.environ if environ is None else environ
    serving_tokens = serving_tokens_from_env(env)
    if serving_tokens is None:
        return None
    tokenizer = env.get(SERVING_TOKENIZER)
    if not tokenizer:
        return byte_budget(serving_tokens)
    try:
        budget = token_budget(serving_tokens, token_counter(tokenizer))
    except TokenizerUnavailable as error:
        raise SettingsError(f"{SERVING_TOKENIZER}: {error}") from None
    if budget.limit <= 0:
        raise SettingsError(
            f"{SERVING_MAX_TOKENS}={serving_tokens} leaves no room for a task catalogue: the rest of the "
            f"longest prompt takes {serving_tokens - budget.limit} tokens (docs/api.md, the catalogue budget)"
        )
    return budget


def timeout_setting(kind: str, strategy: Strategy) -> str:
    """The variable holding a strategy's `kind` ("PRIMARY" or "FALLBACK") timeout."""
    suffix = "" if strategy is Strategy.ZERO_SHOT else f"_{strategy.value.upper()}"
    return f"TASKROUTER_{kind}_TIMEOUT_MS{suffix}"


def _explanations(env: Mapping[str, str]) -> Explanations:
    """What a 503 says to change, in this environment's names (read once, at start-up)."""
    endpoint = env.get("TASKROUTER_SAGEMAKER_ENDPOINT") or None
    component = env.get("TASKROUTER_SAGEMAKER_COMPONENT") or None
    base_url = _without_credentials(env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL)
    in_aws = bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))
    if in_aws:  # in AWS the stack sets the key's secret
        fallback_unset = "fallback not configured (TASKROUTER_OPENAI_SECRET_ARN unset)"
        key_hint = "check the OpenAI key in the secret TASKROUTER_OPENAI_SECRET_ARN names"
    else:
        fallback_unset = (
            "fallback not configured (set OPENAI_API_KEY, or OPENAI_BASE_URL for a local OpenAI-compatible server)"
        )
        key_hint = "check OPENAI_API_KEY"
    model = env.get("TASKROUTER_OPENAI_MODEL", DEFAULT_OPENAI_MODEL)
    structured_output_hints = {400: "does the server take response_format json_object with a schema?"}
    if openai_response_format_from_env(env) is ResponseFormat.JSON_SCHEMA:
        dialect_hint = f"does the server take response_format json_schema? If not: {OPENAI_RESPONSE_FORMAT}=auto"
        # llama-cpp-python's server refuses json_schema with a 500; in AWS the server is OpenAI's
        structured_output_hints = {400: dialect_hint} if in_aws else {400: dialect_hint, 500: dialect_hint}
    return Explanations(
        primary_not_configured="primary not configured (TASKROUTER_SAGEMAKER_ENDPOINT unset)",
        fallback_not_configured=fallback_unset,
        # Locally the 503 names where each backend is; in AWS its readers are API-key holders, to whom
        # the deployment's resource names are none of their business (the stack's outputs hold them).
        primary_location=(
            f"SageMaker endpoint {endpoint}" + (f", component {component}" if component else "")
            if endpoint and not in_aws else None
        ),
        fallback_location=None if in_aws else base_url,
        primary_timeout_settings={strategy: timeout_setting("PRIMARY", strategy) for strategy in Strategy},
        fallback_timeout_settings={strategy: timeout_setting("FALLBACK", strategy) for strategy in Strategy},
        fallback_status_hints={
            **structured_output_hints,
            401: key_hint,
            403: key_hint,
            404: f"does it serve the model TASKROUTER_OPENAI_MODEL names ({model})?",
        },
    )


def _without_credentials(url: str) -> str:
    """A URL as it may be shown: any user and password taken out."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise SettingsError(f"{name} is not set")
    return value


def number_setting(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """A number read from `env[name]` within [low, high], `default` when unset or empty."""
    raw = env.get(name)
    if raw is None or raw == "":
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value


def _budgets(env: Mapping[str, str]) -> dict[Strategy, Budget]:
    """Each strategy's timeouts: TASKROUTER_PRIMARY_TIMEOUT_MS and TASKROUTER_FALLBACK_TIMEOUT_MS are
    zero-shot's, the same names suffixed with _FEW_SHOT_COT or _REACT those strategies'.

    TASKROUTER_HEDGE_AFTER_MS is when zero-shot's fallback starts beside a silent primary ("off", or
    a delay not under its primary timeout: never). The strategies that reason do not hedge: their
    primary takes seconds by design, so a hedge would start beside nearly every request, doubling its
    cost; their fallback starts when the primary fails or misses its deadline."""
    timeouts = {}
    for strategy, (primary_ms, fallback_ms) in DEFAULT_TIMEOUTS_MS.items():
        timeouts[strategy] = (
            number_setting(env, timeout_setting("PRIMARY", strategy), primary_ms, *PRIMARY_TIMEOUT_MS),
            number_setting(env, timeout_setting("FALLBACK", strategy), fallback_ms, *FALLBACK_TIMEOUT_MS),
        )
    hedge_after_s = None
    if env.get("TASKROUTER_HEDGE_AFTER_MS", "").lower() != "off":
        hedge_ms = number_setting(env, "TASKROUTER_HEDGE_AFTER_MS", DEFAULT_HEDGE_AFTER_MS, 0, PRIMARY_TIMEOUT_MS[1])
        hedge_after_s = hedge_ms / 1000 if hedge_ms < timeouts[Strategy.ZERO_SHOT][0] else None
    return {
        strategy: Budget(
            primary_timeout_s=primary_ms / 1000,
            fallback_timeout_s=fallback_ms / 1000,
            hedge_after_s=hedge_after_s if strategy is Strategy.ZERO_SHOT else None,
        )
        for strategy, (primary_ms, fallback_ms) in timeouts.items()
    }


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value
