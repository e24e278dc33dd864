"""The teacher function's settings from the environment (docs/configuration.md): the teacher's model,
strategy, timeout and caps, where completed records go (the capture bucket (AWS), a folder (`make
local`), or nowhere: a stage that stores no records, whose teacher labels and publishes only), and the
table of deliveries already handled (AWS; none locally, where each event is delivered once)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from taskrouter.adapters.settings import DEFAULT_OPENAI_MODEL, SettingsError, number_setting, openai_response_format_from_env
from taskrouter.adapters.structured_output import ResponseFormat
from taskrouter.core.request import Strategy

DEFAULT_TEACHER_STRATEGY = Strategy.FEW_SHOT_COT
DEFAULT_TEACHER_TIMEOUT_MS = 10_000
TEACHER_TIMEOUT_MS = (100, 60_000)
# The teacher shares the model's OpenAI limits (per organisation and model) with the fallback, which
# must keep most of them: a request's tokens are its prompt and its answer cap.
DEFAULT_REQUESTS_PER_MINUTE = 60
DEFAULT_TOKENS_PER_MINUTE = 100_000
MAX_REQUESTS_PER_MINUTE = 100_000
MAX_TOKENS_PER_MINUTE = 100_000_000


@dataclass(frozen=True)
class TeacherSettings:
    model: str
    strategy: Strategy
    timeout_s: float
    requests_per_minute: int  # 0: every sample capped (the teacher asked nothing)
    tokens_per_minute: int
    openai_secret_arn: str | None  # in AWS the key comes from Secrets Manager, never the environment
    openai_configured: bool
    response_format: ResponseFormat  # the fallback's server dialect: the teacher asks the same server
    bucket: str | None  # the capture bucket (AWS); it wins over `capture_dir`; neither: nothing stored
    kms_key: str | None  # sent with each object only when set: otherwise the bucket's default key
    capture_dir: Path | None  # make local's capture folder
    deliveries_table: str | None  # the DynamoDB table of record ids handled (teacher_deliveries.py)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TeacherSettings:
        env = os.environ if environ is None else environ
        secret_arn = env.get("TASKROUTER_OPENAI_SECRET_ARN") or None
        bucket = env.get("TASKROUTER_CAPTURE_BUCKET") or None
        capture_dir = env.get("TASKROUTER_CAPTURE_DIR") or None
        strategy = env.get("TASKROUTER_TEACHER_STRATEGY") or DEFAULT_TEACHER_STRATEGY.value
        if strategy not in {s.value for s in Strategy}:
            raise SettingsError(f"TASKROUTER_TEACHER_STRATEGY must be one of {[s.value for s in Strategy]}, got {strategy!r}")
        return cls(
            model=env.get("TASKROUTER_TEACHER_MODEL") or env.get("TASKROUTER_OPENAI_MODEL") or DEFAULT_OPENAI_MODEL,
            strategy=Strategy(strategy),
            timeout_s=number_setting(env, "TASKROUTER_TEACHER_TIMEOUT_MS", DEFAULT_TEACHER_TIMEOUT_MS, *TEACHER_TIMEOUT_MS) / 1000,
            requests_per_minute=int(
                number_setting(env, "TASKROUTER_TEACHER_REQUESTS_PER_MINUTE", DEFAULT_REQUESTS_PER_MINUTE, 0, MAX_REQUESTS_PER_MINUTE)
            ),
            tokens_per_minute=int(
                number_setting(env, "TASKROUTER_TEACHER_TOKENS_PER_MINUTE", DEFAULT_TOKENS_PER_MINUTE, 0, MAX_TOKENS_PER_MINUTE)
            ),
            openai_secret_arn=secret_arn,
            # Locally the official client reads OPENAI_API_KEY / OPENAI_BASE_URL itself.
            openai_configured=bool(secret_arn or env.get("OPENAI_API_KEY")),
            response_format=openai_response_format_from_env(env),
            bucket=bucket,
            kms_key=env.get("TASKROUTER_CAPTURE_KMS_KEY") or None,
            capture_dir=Path(capture_dir) if capture_dir else None,
            deliveries_table=env.get("TASKROUTER_TEACHER_DELIVERIES_TABLE") or None,
        )
