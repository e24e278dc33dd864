"""Typed configuration: the stages (`stages.toml`), the serving settings and adapter manifests
(`model_artifacts/`). Anything invalid stops synth with a message naming the field."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from aws_cdk import RemovalPolicy, aws_logs as logs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskrouter.core.prompt_formats import PROMPT_FORMATS
from taskrouter.core.request import Strategy

ROOT = Path(__file__).resolve().parent.parent
STAGES_FILE = ROOT / "infra" / "stages.toml"
SERVING_FILE = ROOT / "model_artifacts" / "serving.json"

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
    {"g4dn", "g4ad", "g5", "g6", "g6e", "gr6", "p4d", "p4de", "p5", "p5e", "p5en", "p6", "c5d", "m5d", "r5d"}
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,15}$")]
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")]
    account: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None
    gpu_instance_type: Annotated[str, Field(pattern=r"^ml\.[a-z0-9]+\.[0-9]*x?large$")]
    gpu_instance_count: Annotated[int, Field(ge=1, le=20)]
    latency_budget_ms: Annotated[int, Field(ge=50, le=10_000)] = 300
    primary_timeout_ms: Annotated[int, Field(ge=10, le=10_000)]
    fallback_timeout_ms: Annotated[int, Field(ge=100, le=25_000)]
    openai_model: Annotated[str, Field(min_length=1, max_length=100)]
    default_strategy: Strategy = Strategy.ZERO_SHOT
    alarm_emails: Annotated[list[str], Field(min_length=1)]
    log_retention_days: int
    retain_on_delete: bool
    api_rate_limit_rps: Annotated[int, Field(ge=1, le=10_000)]
    api_burst_limit: Annotated[int, Field(ge=1, le=5_000)]
    lmi_image_tag: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+-lmi[0-9.]+-cu[0-9]+$")]
    adapter_manifest: Annotated[str, Field(min_length=1)]

    @field_validator("alarm_emails")
    @classmethod
    def _emails(cls, emails: list[str]) -> list[str]:
        for email in emails:
            if not _EMAIL.match(email):
                raise ValueError(f"not an e-mail address: {email!r}")
        return emails

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, days: int) -> int:
        if days not in LOG_RETENTIONS:
            raise ValueError(f"must be one of CloudWatch's retentions {sorted(LOG_RETENTIONS)}")
        return days

    @model_validator(mode="after")
    def _timeouts_fit_the_budget(self) -> StageConfig:
        if self.primary_timeout_ms >= self.latency_budget_ms:
            raise ValueError("primary_timeout_ms must be under latency_budget_ms, leaving time for the fallback")
        return self

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
        return self.gpu_instance_family not in INSTANCE_STORE_FAMILIES


class BaseModelRef(_Strict):
    id: Annotated[str, Field(pattern=r"^[\w.-]+/[\w.-]+$")]
    revision: Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]  # a commit, never a moving branch


class AdapterRef(_Strict):
    method: Literal["qlora", "lora"]
    rank: Annotated[int, Field(ge=1, le=256)]
    artifact_key: Annotated[str, Field(pattern=r"^[\w./-]+\.tar\.gz$")]


class AdapterManifest(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{2,40}$")]
    description: str = ""
    base_model: BaseModelRef
    adapter: AdapterRef
    prompt_format: str

    @field_validator("prompt_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in PROMPT_FORMATS:
            raise ValueError(f"must be one of {PROMPT_FORMATS}")
        return value


class ServingSettings(_Strict):
    container: Literal["djl-lmi"]
    image_repository: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/-]*$")]
    options: dict[Annotated[str, Field(pattern=r"^OPTION_[A-Z0-9_]+$")], str]
    accelerators_per_copy: Annotated[int, Field(ge=1, le=8)]
    min_memory_mb: Annotated[int, Field(ge=1024)]
    model_data_download_timeout_s: Annotated[int, Field(ge=60, le=3600)]
    container_startup_health_check_timeout_s: Annotated[int, Field(ge=60, le=3600)]


class ConfigError(Exception):
    """Configuration that cannot be synthesized; the message names the file and field."""


def _validate(model: type[BaseModel], data: object, source: str):
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(top level)'}: {item['msg']}"
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


def load_adapter_manifest(stage: StageConfig) -> AdapterManifest:
    return _load_json(AdapterManifest, ROOT / stage.adapter_manifest)
