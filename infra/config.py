"""Typed configuration: the stages (`stages.toml`), the serving settings and adapter manifests
(`model_artifacts/`). Anything invalid stops synth with a message naming the field."""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from aws_cdk import RemovalPolicy, aws_logs as logs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskrouter.adapters.settings import (
    FALLBACK_TIMEOUT_MS,
    PRIMARY_TIMEOUT_MS,
    REGISTRY_CONNECT_TIMEOUT_S,
    REGISTRY_READ_TIMEOUT_S,
)
from taskrouter.core.catalogue import byte_budget, catalogue_bytes
from taskrouter.core.confidence import BASE, ThresholdEntry, ThresholdsError, check_unique
from taskrouter.core.request import Strategy
from taskrouter.core.task_spec import load_task_file
from taskrouter.core.tasks import check_task_name
from taskrouter.repository import DEFAULT_TASKS_FILE, SERVING_FILE
from taskrouter.core.validation import field_path

ROOT = Path(__file__).resolve().parent.parent
STAGES_FILE = ROOT / "infra" / "stages.toml"

# The retentions CloudWatch Logs accepts, in days.
_RETENTIONS = logs.RetentionDays
LOG_RETENTIONS = {
    1: _RETENTIONS.ONE_DAY, 3: _RETENTIONS.THREE_DAYS, 5: _RETENTIONS.FIVE_DAYS, 7: _RETENTIONS.ONE_WEEK,
    14: _RETENTIONS.TWO_WEEKS, 30: _RETENTIONS.ONE_MONTH, 60: _RETENTIONS.TWO_MONTHS, 90: _RETENTIONS.THREE_MONTHS,
    120: _RETENTIONS.FOUR_MONTHS, 150: _RETENTIONS.FIVE_MONTHS, 180: _RETENTIONS.SIX_MONTHS,
    365: _RETENTIONS.ONE_YEAR, 400: _RETENTIONS.THIRTEEN_MONTHS, 545: _RETENTIONS.EIGHTEEN_MONTHS,
    731: _RETENTIONS.TWO_YEARS, 1096: _RETENTIONS.THREE_YEARS, 1827: _RETENTIONS.FIVE_YEARS,
    2192: _RETENTIONS.SIX_YEARS, 2557: _RETENTIONS.SEVEN_YEARS, 2922: _RETENTIONS.EIGHT_YEARS,
    3288: _RETENTIONS.NINE_YEARS, 3653: _RETENTIONS.TEN_YEARS,
}

# Families whose instances carry local NVMe storage: their volumes are encrypted by the instance's
# hardware and CreateEndpointConfig refuses a KmsKeyId for them.
INSTANCE_STORE_FAMILIES = frozenset(
    {"g4dn", "g4ad", "g5", "g6", "g6e", "gr6", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6",
     "c5d", "c6id", "m5d", "m6id", "r5d", "r6id", "trn1", "trn1n"}
)
# Families with EBS volumes only: those get a customer-managed KMS key. A family in neither list
# stops synth, rather than guessing which way CreateEndpointConfig would go.
EBS_ONLY_FAMILIES = frozenset({"p2", "p3", "inf1", "inf2", "c5", "c6i", "c7i", "m5", "m6i", "m7i", "r5", "r6i", "t2"})

# SageMaker's rule for endpoint and inference component names.
_SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# API Gateway gives up on an integration after 29 s: the router must end well before.
API_GATEWAY_INTEGRATION_TIMEOUT_S = 29

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _check_storage_known(instance_type: str) -> str:
    family = instance_type.split(".")[1]
    if family not in INSTANCE_STORE_FAMILIES | EBS_ONLY_FAMILIES:
        raise ValueError(
            f"instance family {family!r} is not known to have (or lack) local NVMe storage, which decides "
            "whether its volume takes a KMS key: add it to INSTANCE_STORE_FAMILIES or EBS_ONLY_FAMILIES"
        )
    return instance_type


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseModelRef(_Strict):
    id: Annotated[str, Field(pattern=r"^[\w.-]+/[\w.-]+$")]
    revision: Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]  # a commit, never a moving branch


class StrategyBudget(_Strict):
    """One strategy's latency budget (end to end, what alarms hold it to) and its backends' timeouts."""

    latency_ms: Annotated[int, Field(ge=50, le=20_000)]
    primary_timeout_ms: Annotated[int, Field(ge=PRIMARY_TIMEOUT_MS[0], le=PRIMARY_TIMEOUT_MS[1])]
    fallback_timeout_ms: Annotated[int, Field(ge=FALLBACK_TIMEOUT_MS[0], le=FALLBACK_TIMEOUT_MS[1])]

    @model_validator(mode="after")
    def _primary_fits_the_budget(self) -> StrategyBudget:
        if self.primary_timeout_ms >= self.latency_ms:
            raise ValueError("primary_timeout_ms must be under latency_ms, leaving time for the fallback")
        return self


class ScalingConfig(_Strict):
    """Copies of the base component (one GPU each; with `ml.g5` types up to 16xlarge, one instance
    each), scaled on invocations per copy; a minimum of 0 lets an idle stage scale to zero, the router
    answering through the fallback meanwhile (`no_capacity`)."""

    min_copies: Annotated[int, Field(ge=0, le=20)]
    max_copies: Annotated[int, Field(ge=1, le=20)]
    invocations_per_copy: Annotated[int, Field(ge=1, le=10_000)]  # a minute's target per copy

    @model_validator(mode="after")
    def _ordered(self) -> ScalingConfig:
        if self.min_copies > self.max_copies:
            raise ValueError("min_copies must not exceed max_copies")
        return self


# CodeDeploy's canary configurations for Lambda (LambdaDeploymentConfig.CANARY_10_PERCENT_*): a tenth of
# the traffic on the new version for that long, then all of it; "off": CloudFormation moves the alias
# at once, no CodeDeploy.
CanaryName = Literal["off", "10_percent_5_minutes", "10_percent_10_minutes", "10_percent_15_minutes",
                     "10_percent_30_minutes"]


class RouterConcurrency(_Strict):
    """The router's Lambda concurrency (its alias `live`) and how new versions reach it.

    `reserved` caps the router's concurrent executions: a burst is throttled (API Gateway answers
    503 with Retry-After) rather than draining the account's pool or the OpenAI quota. Provisioned
    concurrency keeps `provisioned_min` to `provisioned_max` environments initialized on the alias
    (no cold start on the user's path), scaled by Application Auto Scaling to hold
    LambdaProvisionedConcurrencyUtilization at `utilization_target`; a `provisioned_max` of 0 means
    none (the stage may cold start). It counts within `reserved`. `canary` applies to the registry
    function's alias too: both deploy the same way."""

    # Lambda refuses a reservation that leaves the account fewer than 100 unreserved executions: 900
    # is the default account quota (1,000) less those; a raised quota would lift it.
    reserved: Annotated[int, Field(ge=1, le=900)]
    provisioned_min: Annotated[int, Field(ge=0)] = 0
    provisioned_max: Annotated[int, Field(ge=0)] = 0
    # Application Auto Scaling's target for the share of provisioned environments busy (0.1 to 0.9).
    utilization_target: Annotated[float, Field(ge=0.1, le=0.9)] = 0.7
    canary: CanaryName = "off"

    @model_validator(mode="after")
    def _provisioned_within_reserved(self) -> RouterConcurrency:
        if self.provisioned_min > self.provisioned_max:
            raise ValueError("provisioned_min must not exceed provisioned_max")
        if self.provisioned_max > self.reserved:
            raise ValueError(
                "provisioned_max must not exceed reserved: provisioned concurrency is taken from the reserved"
            )
        if self.provisioned_max > 0 and self.provisioned_min < 1:
            raise ValueError("provisioned_min must be at least 1 where provisioned_max is set (0: none at all)")
        # A canary weights the alias, and Lambda refuses changes to provisioned concurrency on a weighted
        # alias: it stays fixed there (infra/api.py, _scale_provisioned_concurrency).
        if self.canary != "off" and self.provisioned_min != self.provisioned_max:
            raise ValueError(
                f"a canary ({self.canary}) weights the router's alias, where Lambda refuses changes to provisioned "
                f"concurrency: set provisioned_min equal to provisioned_max (now {self.provisioned_min} and "
                f"{self.provisioned_max}), or canary = \"off\" to scale it"
            )
        return self

    @property
    def provisioned(self) -> bool:
        return self.provisioned_max > 0


class TrainingConfig(_Strict):
    """SageMaker training jobs of `taskrouter adapter launch`: a GPU instance, managed spot (up to
    ~70 % cheaper; an interrupted job resumes from its last checkpoint), and hard limits on time."""

    instance_type: Annotated[str, Field(pattern=r"^ml\.[a-z0-9]+\.[0-9]*x?large$")]
    # AWS's PyTorch training image (DLC, GPU); the job installs the training extra's other pins on it.
    image_tag: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+-gpu-py[0-9]+-cu[0-9]+-[a-z0-9.]+-sagemaker$")]
    spot: bool = True
    max_run_hours: Annotated[int, Field(ge=1, le=120)]  # training alone; the job stops there
    max_wait_hours: Annotated[int, Field(ge=1, le=240)]  # spot: run time plus waiting for capacity
    checkpoint_every_steps: Annotated[int, Field(ge=1, le=100_000)] = 50

    @field_validator("instance_type")
    @classmethod
    def _known_storage(cls, instance_type: str) -> str:
        return _check_storage_known(instance_type)

    @model_validator(mode="after")
    def _wait_covers_run(self) -> TrainingConfig:
        if self.spot and self.max_wait_hours < self.max_run_hours:
            raise ValueError("max_wait_hours must be at least max_run_hours (SageMaker's rule for spot jobs)")
        return self

    @property
    def volume_kms_supported(self) -> bool:
        """Instances with local NVMe storage encrypt it in hardware; CreateTrainingJob refuses a
        VolumeKmsKeyId for them."""
        return self.instance_type.split(".")[1] in EBS_ONLY_FAMILIES


RedactKind = Literal["email", "phone"]  # what the router redacts before a turn leaves it (docs/capture.md)


class CaptureConfig(_Strict):
    """Quality in production (docs/capture.md). Every stage measures: the router draws `share` of the
    turns the primary answered (escalated ones included), redacts them and sends them to the teacher
    (the stage's OpenAI model with a reasoning strategy) in a function of its own, which labels them and
    publishes `TeacherAgreement`; it alarms when the primary and the teacher disagree too often. `share`
    0 measures nothing (no teacher, nothing sent), and only where no records are stored.

    `enabled`: the records are stored (the capture bucket, its Glue table and Athena workgroup,
    infra/capture.py; `taskrouter data harvest`). Only there do the two other draws count, whose turns
    nothing else would keep: `fallback_share` of the turns the fallback decided (their label is already
    paid for: the teacher is not asked), `unseen_share` of the primary's other turns whose allowed tasks
    include one the serving adapter was not trained on (never in TeacherAgreement). `teacher_model`
    defaults to the stage's `openai_model` (StageConfig fills it in)."""

    enabled: bool
    share: Annotated[float, Field(ge=0, le=1)]
    fallback_share: Annotated[float, Field(ge=0, le=1)]
    unseen_share: Annotated[float, Field(ge=0, le=1)] = 1.0
    teacher_model: Annotated[str, Field(min_length=1, max_length=100)]
    teacher_strategy: Strategy = Strategy.FEW_SHOT_COT
    # The teacher's whole OpenAI call; its function's timeout adds a margin (infra/capture.py). Not on
    # any user's path: it may take what a reasoning strategy needs.
    teacher_timeout_ms: Annotated[int, Field(ge=1_000, le=60_000)] = 10_000
    min_agreement: Annotated[float, Field(ge=0, le=1)]  # TeacherAgreement alarms under it over an hour...
    min_samples: Annotated[int, Field(ge=1)]  # ...with at least this many uniformly sampled turns
    retention_days: Annotated[int, Field(ge=1, le=3_650)]  # the records' and Athena results' expiry
    redact: list[RedactKind] = ["email", "phone"]
    # The teacher's own caps (OpenAI's limits are the organisation's, shared with the fallback).
    teacher_requests_per_minute: Annotated[int, Field(ge=1, le=100_000)]
    teacher_tokens_per_minute: Annotated[int, Field(ge=1, le=100_000_000)]
    # The router's bound on sending a sampled turn: past it the sample is dropped (CaptureDropped).
    send_timeout_ms: Annotated[int, Field(ge=10, le=1_000)] = 100

    @property
    def measures(self) -> bool:
        """The teacher function, its alarms and the router's sends exist (infra/stage.py)."""
        return self.share > 0

    @property
    def stores_records(self) -> bool:
        """The capture bucket, its Glue table and Athena workgroup exist; harvest has something to read."""
        return self.enabled

    def router_shares(self) -> tuple[float, float, float]:
        """The router's draws: `share`, `fallback_share`, `unseen_share` where records are stored; the
        uniform share alone where none are (a turn drawn by the other two would only be labelled, or
        not even that, and dropped: an OpenAI call or an invocation paid for nothing)."""
        if self.stores_records:
            return self.share, self.fallback_share, self.unseen_share
        return self.share, 0.0, 0.0

    @field_validator("redact")
    @classmethod
    def _no_repeat(cls, kinds: list[str]) -> list[str]:
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"repeats a kind: {kinds}")
        return kinds

    @model_validator(mode="after")
    def _samples_something(self) -> CaptureConfig:
        if self.enabled and self.share == 0:
            raise ValueError("share must be over 0 where records are stored (enabled = true): TeacherAgreement "
                             "counts only the turns drawn at share, and would never get a sample")
        return self

    @property
    def redact_environment(self) -> str:
        """TASKROUTER_CAPTURE_REDACT: the kinds comma-joined, or `none`."""
        return ",".join(self.redact) or "none"


# DecisionLatency alarms on each strategy's p90 (infra/monitoring.py): it holds while at most a tenth of
# the decisions run over the budget. An escalated decision takes the primary's time plus the
# fallback's (zero-shot: ~0.1-0.25 s + ~0.6-1 s against 0.3 s; few-shot CoT ~1 s + ~1.5 s against
# 1.5 s; ReAct ~1.6 s + ~1.5 s against 2 s): every one is over its strategy's budget, so the share a
# stage plans to escalate must stay under a tenth, with room left for the fallbacks that failures cause.
P90_OVER_BUDGET_SHARE = 0.10


class ConfidenceConfig(_Strict):
    """Escalation of the primary's doubtful answers (docs/api.md, "Confidence and escalation").

    `thresholds`: what `taskrouter eval threshold` prints, one per strategy and adapter (`base`: the
    base model alone); none: nothing is escalated (the default until a threshold is calibrated).
    `planned_escalated_share`: the share of the answers held to a threshold that the stage plans to
    escalate, a cost guard: `Escalated` alarms over an hour above it, once the hour holds at least
    `min_samples` such answers."""

    thresholds: list[ThresholdEntry] = []
    planned_escalated_share: Annotated[float, Field(gt=0, lt=P90_OVER_BUDGET_SHARE)] = 0.05
    min_samples: Annotated[int, Field(ge=1)] = 100

    @field_validator("thresholds")
    @classmethod
    def _one_per_strategy_and_adapter(cls, entries: list[ThresholdEntry]) -> list[ThresholdEntry]:
        try:
            check_unique(entries)
        except ThresholdsError as error:
            raise ValueError(str(error)) from None
        return entries

    def environment(self) -> dict[str, str]:
        """TASKROUTER_CONFIDENCE_THRESHOLDS for the router (it applies its own adapter's); none: unset."""
        if not self.thresholds:
            return {}
        listed = [entry.model_dump(mode="json") for entry in self.thresholds]
        return {"TASKROUTER_CONFIDENCE_THRESHOLDS": json.dumps(listed, separators=(",", ":"))}


class StageConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{1,15}$")]
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")]
    account: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None
    gpu_instance_type: Annotated[str, Field(pattern=r"^ml\.[a-z0-9]+\.[0-9]*x?large$")]
    gpu_instance_count: Annotated[int, Field(ge=1, le=20)]
    scaling: ScalingConfig
    budgets: dict[Strategy, StrategyBudget]  # one for each strategy
    hedge_after_ms: Annotated[int, Field(ge=0)] | None = None  # zero-shot's; None: no hedging
    openai_model: Annotated[str, Field(min_length=1, max_length=100)]
    default_strategy: Strategy = Strategy.ZERO_SHOT
    alarm_emails: Annotated[list[str], Field(min_length=1)]
    log_retention_days: int
    retain_on_delete: bool
    api_rate_limit_rps: Annotated[int, Field(ge=1, le=10_000)]
    api_burst_limit: Annotated[int, Field(ge=1, le=5_000)]
    lmi_image_tag: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+-lmi[0-9.]+-cu[0-9]+$")]
    base_model: BaseModelRef
    # Adapter manifests (model_artifacts/adapters/*.json) served as adapter components on the base;
    # none: the stage serves the base model alone (zero-shot with constrained decoding needs none).
    adapters: list[Annotated[str, Field(min_length=1)]] = []
    router_adapter: str | None = None  # the adapter the router invokes; None: the base component
    # The endpoint's containers reach nothing outside AWS: the weights come from the stage's bucket
    # (staged there at the pinned revision on deploy), never from the hub at run time.
    network_isolation: bool = True
    training: TrainingConfig
    router_concurrency: RouterConcurrency
    capture: CaptureConfig
    confidence: ConfidenceConfig = ConfidenceConfig()

    @model_validator(mode="before")
    @classmethod
    def _teacher_defaults_to_the_fallbacks_model(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("capture"), dict) and "openai_model" in data:
            data = {**data, "capture": {"teacher_model": data["openai_model"], **data["capture"]}}
        return data

    @field_validator("alarm_emails")
    @classmethod
    def _emails(cls, emails: list[str]) -> list[str]:
        for email in emails:
            if not _EMAIL.fullmatch(email):
                raise ValueError(f"not an e-mail address: {email!r}")
        return emails

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, days: int) -> int:
        if days not in LOG_RETENTIONS:
            raise ValueError(f"must be one of CloudWatch's retentions {sorted(LOG_RETENTIONS)}")
        return days

    @field_validator("gpu_instance_type")
    @classmethod
    def _known_storage(cls, instance_type: str) -> str:
        return _check_storage_known(instance_type)

    @property
    def base_weights_prefix(self) -> str:
        """Where the base's weights lie in the artifact bucket, one folder per pinned revision."""
        return f"base/{self.base_model.id}/{self.base_model.revision}/"

    @model_validator(mode="after")
    def _starts_within_its_scaling(self) -> StageConfig:
        if not max(1, self.scaling.min_copies) <= self.gpu_instance_count <= self.scaling.max_copies:
            raise ValueError("gpu_instance_count (the copies a deploy starts with) must be within scaling's bounds")
        return self

    @model_validator(mode="after")
    def _timeouts_fit_the_budget(self) -> StageConfig:
        missing = sorted(strategy.value for strategy in Strategy if strategy not in self.budgets)
        if missing:
            raise ValueError(f"budgets: every strategy needs one; missing {missing}")
        if self.hedge_after_ms is not None and self.hedge_after_ms >= self.zero_shot.primary_timeout_ms:
            raise ValueError("hedge_after_ms must be under zero-shot's primary_timeout_ms, or the hedge never starts")
        if self.router_timeout_s > API_GATEWAY_INTEGRATION_TIMEOUT_S:
            raise ValueError(
                f"the slowest strategy's primary_timeout_ms + fallback_timeout_ms leave the router "
                f"{self.router_timeout_s} s, over API Gateway's {API_GATEWAY_INTEGRATION_TIMEOUT_S} s"
            )
        return self

    @model_validator(mode="after")
    def _reserved_carries_the_api_rate(self) -> StageConfig:
        # concurrency = requests per second x seconds per request: at the API's rate limit, with every
        # decision within zero-shot's budget, this many executions are busy at once.
        if Strategy.ZERO_SHOT not in self.budgets:
            return self  # _timeouts_fit_the_budget names the missing budget
        needed = math.ceil(self.api_rate_limit_rps * self.zero_shot.latency_ms / 1000)
        if self.router_concurrency.reserved < needed:
            raise ValueError(
                f"router_concurrency.reserved must be at least {needed}: api_rate_limit_rps "
                f"{self.api_rate_limit_rps} x zero-shot's latency_ms {self.zero_shot.latency_ms} ms"
            )
        return self

    @property
    def zero_shot(self) -> StrategyBudget:
        """The budget of the 300 ms promise; the router's unsuffixed settings are its."""
        return self.budgets[Strategy.ZERO_SHOT]

    @property
    def router_timeout_s(self) -> int:
        """The router Lambda's timeout: registry read, the slowest strategy's primary and fallback, a
        sampled turn's send (on every stage that measures), and a second of margin."""
        registry_s = REGISTRY_CONNECT_TIMEOUT_S + REGISTRY_READ_TIMEOUT_S
        slowest_ms = max(budget.primary_timeout_ms + budget.fallback_timeout_ms for budget in self.budgets.values())
        capture_ms = self.capture.send_timeout_ms if self.capture.measures else 0  # a sampled turn's bounded send
        return math.ceil(registry_s + (slowest_ms + capture_ms) / 1000 + 1)

    def timeout_environment(self) -> dict[str, str]:
        """The router's timeout variables (docs/configuration.md): zero-shot's unsuffixed, the other
        strategies' with their name as suffix."""
        env = {}
        for strategy, budget in self.budgets.items():
            suffix = "" if strategy is Strategy.ZERO_SHOT else f"_{strategy.value.upper()}"
            env[f"TASKROUTER_PRIMARY_TIMEOUT_MS{suffix}"] = str(budget.primary_timeout_ms)
            env[f"TASKROUTER_FALLBACK_TIMEOUT_MS{suffix}"] = str(budget.fallback_timeout_ms)
        return env

    @property
    def endpoint_name(self) -> str:
        return f"taskrouter-{self.name}"

    @property
    def base_component_name(self) -> str:
        return f"taskrouter-{self.name}-base"

    def adapter_component_name(self, adapter: str) -> str:
        return f"taskrouter-{self.name}-{adapter}"

    @property
    def router_component_name(self) -> str:
        """The inference component the router invokes: the configured adapter's, or the base's."""
        return self.adapter_component_name(self.router_adapter) if self.router_adapter else self.base_component_name

    @property
    def log_retention(self) -> logs.RetentionDays:
        return LOG_RETENTIONS[self.log_retention_days]

    @property
    def removal_policy(self) -> RemovalPolicy:
        """What happens to stateful resources when their stack is deleted."""
        return RemovalPolicy.RETAIN if self.retain_on_delete else RemovalPolicy.DESTROY

    @property
    def gpu_instance_family(self) -> str:
        return self.gpu_instance_type.split(".")[1]

    @property
    def volume_kms_supported(self) -> bool:
        return self.gpu_instance_family in EBS_ONLY_FAMILIES


class AdapterRef(_Strict):
    method: Literal["qlora", "lora"]
    rank: Annotated[int, Field(ge=1, le=256)]
    # Where its `.tar.gz` is (SageMaker takes a single gzip tar as an adapter's ArtifactUrl): a file of
    # this repository that `cdk deploy` uploads (what `taskrouter adapter train` wrote, kept out of
    # git), or an S3 URI where a training job left it. Exactly one.
    archive_file: Annotated[str, Field(pattern=r"^[\w./-]+\.tar\.gz$")] | None = None
    archive_s3_uri: Annotated[str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[\w./=-]+\.tar\.gz$")] | None = None

    @model_validator(mode="after")
    def _one_archive(self) -> AdapterRef:
        if (self.archive_file is None) == (self.archive_s3_uri is None):
            raise ValueError("give exactly one of archive_file and archive_s3_uri")
        return self

    @property
    def s3_bucket_and_key(self) -> tuple[str, str] | None:
        if self.archive_s3_uri is None:
            return None
        bucket, _, key = self.archive_s3_uri.removeprefix("s3://").partition("/")
        return bucket, key


class AdapterManifest(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$", min_length=3, max_length=40)]
    description: str = ""
    base_model: BaseModelRef
    adapter: AdapterRef
    # The tasks it was trained on: its training manifest's `tasks.names` (docs/training.md). The router
    # counts a live task outside them as unseen (UnseenTasks, capture's unseen share); a router adapter
    # must list them (check_deployable).
    tasks: Annotated[list[str], Field(min_length=1)] | None = None

    @field_validator("name")
    @classmethod
    def _not_the_base(cls, name: str) -> str:
        if name == "base":
            raise ValueError("'base' names the base component")
        return name

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return names
        for name in names:
            try:
                check_task_name(name)
            except ValueError as error:
                raise ValueError(f"{name!r}: {error}") from None
        if len(set(names)) != len(names):
            raise ValueError("a task name repeats")
        return sorted(names)


class ServingSettings(_Strict):
    image_repository: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/-]*$")]
    # Engine options of the LMI container (OPTION_*); the tensor-parallel degree comes from
    # accelerators_per_copy, so it is not set here.
    options: dict[Annotated[str, Field(pattern=r"^OPTION_[A-Z0-9_]+$")], str]
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]  # the ranks vLLM 0.12 accepts (vllm/config/lora.py)
    accelerators_per_copy: Annotated[int, Field(ge=1, le=8)]
    min_memory_mb: Annotated[int, Field(ge=1024)]
    model_data_download_timeout_s: Annotated[int, Field(ge=60, le=3600)]
    container_startup_health_check_timeout_s: Annotated[int, Field(ge=60, le=3600)]

    @property
    def max_model_len(self) -> int:
        """The longest sequence the engine serves, in tokens: the task catalogue's budget derives from it."""
        return int(self.options["OPTION_MAX_MODEL_LEN"])

    @property
    def max_loras(self) -> int:
        """Adapters the engine keeps on the GPU at once (LMI's default 4, vllm_rb_properties.py)."""
        return int(self.options.get("OPTION_MAX_LORAS", "4"))

    @field_validator("options")
    @classmethod
    def _async_vllm_with_prefix_caching(cls, options: dict[str, str]) -> dict[str, str]:
        # djl-serving 0.36.0-lmi18-dlc, LmiConfigRecommender.setRollingBatch: any explicit value
        # (vllm and disable included) skips async mode, whose handler takes the router's chat
        # requests; unset, LMI picks vLLM in async mode (lmi_vllm/vllm_async_service.py).
        if "OPTION_ROLLING_BATCH" in options:
            raise ValueError("OPTION_ROLLING_BATCH must stay unset: any value turns LMI's vLLM async mode off")
        # LMI drops a "false" flag, so only "true" says anything: the router's prompts put their
        # constant part first for this cache (vLLM 0.12 enables it by default; say so explicitly).
        if options.get("OPTION_ENABLE_PREFIX_CACHING") != "true":
            raise ValueError("OPTION_ENABLE_PREFIX_CACHING must be \"true\"")
        # The registry's catalogue budget derives from it (taskrouter.core.catalogue), so it is explicit.
        if not options.get("OPTION_MAX_MODEL_LEN", "").isdigit():
            raise ValueError("OPTION_MAX_MODEL_LEN must be set to a number of tokens")
        return options


# Lambda holds a function's environment variables to 4 KB in all: the router's task list (one variable)
# takes at most half, the rest of its variables need the other.
ADAPTER_TASKS_MAX_BYTES = 2_048


def _router_adapter_tasks_problems(manifest: AdapterManifest) -> list[str]:
    """Without its task list the router cannot tell a task the adapter never saw (every one would be
    unseen, or none): the router's adapter must say what it was trained on."""
    if manifest.tasks is None:
        return [f"router_adapter {manifest.name!r}: its manifest lists no `tasks` (the training manifest's "
                "tasks.names): the router counts live tasks outside them as unseen"]
    size = len(",".join(manifest.tasks).encode())
    if size > ADAPTER_TASKS_MAX_BYTES:
        return [f"router_adapter {manifest.name!r}: its {len(manifest.tasks)} task names take {size} bytes, over "
                f"the {ADAPTER_TASKS_MAX_BYTES} the router's environment (4 KB in all, Lambda's limit) spares them"]
    return []


class ConfigError(Exception):
    """Configuration that cannot be synthesized; the message names the file and field."""


def _validate(model: type[BaseModel], data: object, source: str):
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{field_path(item['loc']) or '(top level)'}: {item['msg']}"
            for item in error.errors(include_url=False)
        )
        raise ConfigError(f"{source}: {problems}") from None


def load_stages(path: Path = STAGES_FILE) -> dict[str, StageConfig]:
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path.name}: {error}") from None
    if not raw:
        raise ConfigError(f"{path.name}: defines no stage")
    return {
        name: _validate(StageConfig, {"name": name, **values}, f"{path.name} [{name}]")
        for name, values in raw.items()
    }


def _load_json(model: type[BaseModel], path: Path):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from None
    return _validate(model, data, str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))


def load_serving(path: Path = SERVING_FILE) -> ServingSettings:
    return _load_json(ServingSettings, path)


def load_adapter_manifests(stage: StageConfig) -> list[AdapterManifest]:
    """The stage's adapter manifests, in the order the stage lists them."""
    return [_load_json(AdapterManifest, ROOT / path) for path in stage.adapters]


def check_deployable(stage: StageConfig, manifests: list[AdapterManifest], serving: ServingSettings) -> None:
    """What only the files together can tell: names SageMaker takes, adapters the base can load, and
    the router's adapter among them."""
    problems = []
    names = [manifest.name for manifest in manifests]
    for name in (stage.endpoint_name, stage.base_component_name, *map(stage.adapter_component_name, names)):
        if not _SAGEMAKER_NAME.fullmatch(name):
            problems.append(f"SageMaker name {name!r} is over 63 characters or not [a-zA-Z0-9-]")
    if len(set(names)) != len(names):
        problems.append(f"adapter names repeat: {sorted(names)}")
    for manifest in manifests:
        if manifest.adapter.rank > serving.max_lora_rank:
            problems.append(
                f"{manifest.name}: adapter.rank {manifest.adapter.rank} is over serving.json's max_lora_rank "
                f"{serving.max_lora_rank}"
            )
        if manifest.base_model != stage.base_model:
            problems.append(f"{manifest.name}: trained on {manifest.base_model.id}@{manifest.base_model.revision[:12]}, "
                            f"not the stage's base {stage.base_model.id}@{stage.base_model.revision[:12]}")
        archive = manifest.adapter.archive_file
        if archive is not None and not (ROOT / archive).is_file():
            problems.append(f"{manifest.name}: {archive} is missing (`taskrouter adapter train` writes it)")
    if stage.router_adapter is not None and stage.router_adapter not in names:
        problems.append(f"router_adapter {stage.router_adapter!r} is not one of the stage's adapters {names}")
    for entry in stage.confidence.thresholds:
        if entry.adapter != BASE and entry.adapter not in names:
            problems.append(f"confidence.thresholds: adapter {entry.adapter!r} is neither {BASE!r} nor one of the "
                            f"stage's adapters {names}: its threshold would hold no answer")
    router = next((manifest for manifest in manifests if manifest.name == stage.router_adapter), None)
    if router is not None:
        problems.extend(_router_adapter_tasks_problems(router))
    if len(manifests) > serving.max_loras:
        problems.append(f"{len(manifests)} adapters, over serving.json's OPTION_MAX_LORAS {serving.max_loras}")
    default_catalogue = catalogue_bytes(load_task_file(DEFAULT_TASKS_FILE, updated_at=""))
    if default_catalogue > (budget := byte_budget(serving.max_model_len).limit):
        problems.append(
            f"the default tasks' catalogue ({default_catalogue} bytes) is over the budget serving.json's "
            f"OPTION_MAX_MODEL_LEN leaves ({budget} bytes)"
        )
    if problems:
        raise ConfigError(f"stage {stage.name}: " + "; ".join(problems))
