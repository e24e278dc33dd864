"""What `make local` tells its operator: the start-up banner (stdout), its own notes (stderr), and the
functions' log lines rendered for a person.

In AWS the functions log one JSON object a line (Powertools), for CloudWatch Logs Insights. On a
terminal that is hard to read, so each Lambda container of `make local` writes its standard output
through `ReadableLog`, which turns each such line into one line of text: local time, level, the
message, then the fields that matter (`key=value`, the request id last). The functions' code is the same in both
places; only where their output goes differs. `TASKROUTER_LOCAL_LOG_FORMAT=json` keeps the JSON.
Metrics (EMF documents) are left out, as `POWERTOOLS_METRICS_DISABLED=true` (make local's default)
means, even those of `single_metric`, which Powertools writes regardless; with it `false`, they are
shown as one `METRIC` line each.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from taskrouter.adapters.settings import DEFAULT_OPENAI_BASE_URL, SERVING_MAX_TOKENS, RuntimeSettings
from taskrouter.adapters.teacher_settings import TeacherSettings
from taskrouter.core.request import Strategy
from taskrouter.model_server.local import ADAPTERS
from taskrouter.model_server.protocol import parse_adapters

LOG_FORMATS = ("text", "json")
# Fields of every Powertools line that say nothing about this request, or are on the line already.
_HIDDEN = frozenset({
    "level", "location", "message", "timestamp", "service", "cold_start", "function_name",
    "function_memory_size", "function_arn", "function_request_id", "xray_trace_id", "sampling_rate",
    "exception", "exception_name", "stack_trace", "correlation_id",
})  # fmt: skip


def say(message: str) -> None:
    print(f"[taskrouter-local] {message}", file=sys.stderr, flush=True)


# -- the start-up banner ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptureShown:
    """`make local`'s capture: its share; the teacher function and where the router sends to (None when
    off); the local teacher's settings (None when AWS_ENDPOINT_URL_LAMBDA names the user's own)."""

    share: float
    function: str | None = None
    endpoint: str | None = None
    teacher: TeacherSettings | None = None


def banner(
    url: str, settings: RuntimeSettings, env: Mapping[str, str], state_dir: Path, containers: int,
    *, placeholder_key: bool = False, capture: CaptureShown | None = None,
) -> list[str]:
    """What a newcomer needs at start: where to send requests, which backends can decide and what to
    set to change that, whether a key is needed, the timeouts in force, where captured turns go and who
    labels them, where the state lives (never a key's value). The last line says the server listens
    (tests and scripts wait for it)."""
    lines = [f"TaskRouter local API: {url}  (POST /route, /tasks; GET /health; settings: docs/configuration.md)"]
    lines.append("  primary:  " + _primary(settings, env))
    if env.get("TASKROUTER_LOCAL_MODEL"):
        lines.append("  model:    " + _local_model(env))
    lines.extend("  fallback: " * (i == 0) + " " * 12 * (i > 0) + line for i, line in enumerate(
        _fallback(settings, env, placeholder_key)
    ))  # fmt: skip
    if env.get("TASKROUTER_API_KEY"):
        lines.append("  API key:  on: requests need the header x-api-key (TASKROUTER_API_KEY; unset it for none)")
    else:
        lines.append("  API key:  off (set TASKROUTER_API_KEY to require the header x-api-key)")
    lines.append("  timeouts: " + _timeouts(settings))
    strategy = settings.router.default_strategy.value
    lines.append(f"  strategy: {strategy} when a request names none (TASKROUTER_DEFAULT_STRATEGY)")
    lines.append("  budget:   " + _catalogue(settings, env))
    lines.append("  escalate: " + _escalation(settings))
    if capture is not None:
        lines.extend("  capture:  " * (i == 0) + " " * 12 * (i > 0) + line for i, line in enumerate(_capture(capture)))
    lines.append(f"  state:    {state_dir} (TASKROUTER_LOCAL_DIR)")
    if not settings.sagemaker_endpoint and not settings.openai_configured:
        lines.append("  no backend is configured: every POST /route answers 503 until one is (see above)")
    lines.append(f"TaskRouter listening on {url} ({containers} Lambda containers; Ctrl-C stops)")
    return lines


def _primary(settings: RuntimeSettings, env: Mapping[str, str]) -> str:
    if not settings.sagemaker_endpoint:
        return "not configured (set TASKROUTER_SAGEMAKER_ENDPOINT to use a SageMaker endpoint)"
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "the default region"
    where = env.get("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME") or f"AWS ({region}, with your AWS credentials)"
    component = f", component {settings.sagemaker_component}" if settings.sagemaker_component else ""
    return f"SageMaker endpoint {settings.sagemaker_endpoint}{component} at {where}"


def _local_model(env: Mapping[str, str]) -> str:
    """The local model server's model and adapters, and why the primary's timeouts are long."""
    names = list(parse_adapters(env.get(ADAPTERS, ""), ADAPTERS))  # valid: the server loaded them before the banner
    adapters = (f"adapters {', '.join(names)}, each invoked by its name as component (TASKROUTER_LOCAL_ADAPTERS)"
                if names else "no adapter (TASKROUTER_LOCAL_ADAPTERS=name=DIR,... adds some)")
    hedge = "no hedging" if env.get("TASKROUTER_HEDGE_AFTER_MS") == "off" else "hedging as set"
    return (f"{env['TASKROUTER_LOCAL_MODEL']} on this CPU (TASKROUTER_LOCAL_MODEL), greedy, its output held by "
            f"xgrammar; {adapters}; a CPU decides in seconds: {hedge}, timeouts below (docs/local-model.md)")


def _catalogue(settings: RuntimeSettings, env: Mapping[str, str]) -> str:
    """The task catalogue's budget, its unit and where the serving length comes from, and the transcript."""
    budget, transcript = settings.router.catalogue_budget, settings.router.transcript
    shown = f"prompts show at most {transcript.max_messages} messages, {transcript.max_bytes:,} bytes of them"
    if budget is None:
        return f"no budget (TASKROUTER_SERVING_MAX_TOKENS unset); {shown}"
    serving = int(env[SERVING_MAX_TOKENS])
    if budget.unit == "tokens":
        source = f"the {serving:,}-token context of the model served, counted with its tokenizer"
    else:
        source = f"a serving length of {serving:,} tokens: TASKROUTER_SERVING_MAX_TOKENS"
    return f"{budget.limit:,} {budget.unit} of task catalogue ({source}); {shown} (docs/api.md)"


def _escalation(settings: RuntimeSettings) -> str:
    """The confidence thresholds in force for the serving adapter, or that none is."""
    thresholds = settings.router.thresholds
    adapter = f"adapter {settings.adapter.name} (TASKROUTER_ADAPTER_NAME)"
    if not thresholds:
        return f"off: no confidence threshold for {adapter} (TASKROUTER_CONFIDENCE_THRESHOLDS; docs/api.md)"
    held = ", ".join(f"{strategy.value} under {threshold.value:g}" for strategy, threshold in sorted(
        thresholds.items(), key=lambda item: item[0].value))
    return f"the fallback decides answers of {adapter} with confidence {held} (TASKROUTER_CONFIDENCE_THRESHOLDS)"


def _fallback(settings: RuntimeSettings, env: Mapping[str, str], placeholder_key: bool) -> list[str]:
    if not settings.openai_configured:
        return [
            "not configured (set OPENAI_API_KEY for OpenAI, or OPENAI_BASE_URL for a local "
            "OpenAI-compatible server: Ollama, llama.cpp, vLLM)"
        ]
    base_url = env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL
    model_set = bool(env.get("TASKROUTER_OPENAI_MODEL"))
    model = f"model {settings.openai_model} ({'' if model_set else 'default; '}TASKROUTER_OPENAI_MODEL)"
    key = "no OPENAI_API_KEY: a placeholder key is sent" if placeholder_key else "key from OPENAI_API_KEY"
    lines = [f"{model} at {base_url} ({key})"]
    if base_url.rstrip("/") != DEFAULT_OPENAI_BASE_URL:  # a server of your own, most likely a local model
        which = "" if model_set else "set TASKROUTER_OPENAI_MODEL to a model that server serves; "
        lines.append(f"{which}a slow local model needs a longer TASKROUTER_FALLBACK_TIMEOUT_MS (e.g. 20000)")
    return lines


def _capture(capture: CaptureShown) -> list[str]:
    if capture.function is None:
        return ["off (TASKROUTER_CAPTURE_SHARE=0)"]
    share = f"{capture.share:g} of the turns the primary decides (TASKROUTER_CAPTURE_SHARE; 0: off)"
    teacher = capture.teacher
    if teacher is None:
        return [f"{share}, sent to function {capture.function} at {capture.endpoint} (your AWS_ENDPOINT_URL_LAMBDA)"]
    records = f"s3://{teacher.bucket}/records/" if teacher.bucket else f"{teacher.capture_dir}/records/"
    lines = [
        f"{share}, written to {records}",
        f"teacher {teacher.model}, {teacher.strategy.value} (TASKROUTER_TEACHER_MODEL, TASKROUTER_TEACHER_STRATEGY); "
        f"function {capture.function} at {capture.endpoint}",
    ]
    if not teacher.openai_configured:
        lines.append("no OpenAI for the teacher: records are written without its label (set OPENAI_API_KEY or OPENAI_BASE_URL)")
    return lines


def _timeouts(settings: RuntimeSettings) -> str:
    """Zero-shot's timeouts with their variables, then the reasoning strategies' (same names, suffixed)."""
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f} ms"

    zero_shot = settings.router.budget(Strategy.ZERO_SHOT)
    primary = bool(settings.sagemaker_endpoint)
    parts = [f"primary {ms(zero_shot.primary_timeout_s)} (TASKROUTER_PRIMARY_TIMEOUT_MS)"] if primary else []
    parts.append(f"fallback {ms(zero_shot.fallback_timeout_s)} (TASKROUTER_FALLBACK_TIMEOUT_MS)")
    if primary and zero_shot.hedge_after_s is not None:
        parts.append(f"fallback beside a silent primary after {ms(zero_shot.hedge_after_s)} (TASKROUTER_HEDGE_AFTER_MS)")
    others = []
    for strategy in (Strategy.FEW_SHOT_COT, Strategy.REACT):
        budget = settings.router.budget(strategy)
        both = f"{budget.primary_timeout_s * 1000:.0f}/" if primary else ""
        others.append(f"{strategy.value} {both}{ms(budget.fallback_timeout_s)}")
    return ", ".join(parts) + f"; {', '.join(others)} (the same names + _FEW_SHOT_COT, _REACT)"


# -- the functions' log lines, for a person --------------------------------------------------------
def render(line: str) -> str:
    """One Powertools JSON log line as text: `12:00:01.234 INFO    routed backend=openai ...`,
    with an exception's traceback, if any, indented below. Any other line is returned as it is."""
    stripped = line.strip()
    if not stripped.startswith("{"):
        return line
    try:
        record = json.loads(stripped)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    if isinstance(record.get("_aws"), dict):
        return _metrics(record)
    if "level" not in record or "message" not in record:
        return line  # not a Powertools log line: as it is
    fields = [f"{key}={_value(value)}" for key, value in record.items() if key not in _HIDDEN]
    if record.get("correlation_id"):
        fields.append(f"request_id={_value(record['correlation_id'])}")
    text = " ".join(
        part for part in (
            _time(record.get("timestamp")), f"{str(record['level']):<7}",
            _value(record["message"], quote=False), *fields,
        ) if part
    )  # fmt: skip
    exception = record.get("exception")
    if exception:
        text += "\n" + "\n".join(f"    {row}" for row in str(exception).rstrip().splitlines())
    return text


def _metrics(document: dict[str, Any]) -> str:
    """An EMF document (CloudWatch's embedded metrics) as `METRIC DecisionLatency=14.8ms strategy=...`."""
    aws = document["_aws"]
    stamp = aws.get("Timestamp")
    when = datetime.fromtimestamp(stamp / 1000).strftime("%H:%M:%S.%f")[:-3] if isinstance(stamp, (int, float)) else ""
    metrics, dimensions = [], set()
    for directive in aws.get("CloudWatchMetrics") or []:
        for metric in directive.get("Metrics") or []:
            unit = {"Milliseconds": "ms", "Count": "", "Seconds": "s"}.get(metric.get("Unit"), "")
            values = document.get(metric.get("Name"))
            values = values if isinstance(values, list) else [values]
            metrics.append(f"{metric.get('Name')}={','.join(_value(v) for v in values)}{unit}")
        for names in directive.get("Dimensions") or []:
            dimensions.update(names)
    fields = [f"{name}={_value(document.get(name))}" for name in sorted(dimensions - {"service"})]
    return " ".join(part for part in (when, f"{'METRIC':<7}", *metrics, *fields) if part)


def _time(timestamp: Any) -> str:
    """Powertools' UTC timestamp ("2025-04-09 12:00:01,234+0000") as the local time of day."""
    if not isinstance(timestamp, str):
        return ""
    try:
        moment = datetime.strptime(timestamp, "%Y-%m-%d %H:%M:%S,%f%z").astimezone()
    except ValueError:
        return timestamp
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _value(value: Any, *, quote: bool = True) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        return json.dumps(value, separators=(",", ":"), default=str)
    if quote and (not value or any(c.isspace() or c in '"=' for c in value)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _is_metrics(line: str) -> bool:
    if '"_aws"' not in line:
        return False
    try:
        document = json.loads(line)
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("_aws"), dict)


class ReadableLog:
    """A text stream that renders each complete line it is given (see `render`) before passing it on:
    a Lambda container's stdout, whose Powertools loggers write one JSON line per record."""

    def __init__(self, stream: IO[str], *, metrics: bool = False) -> None:
        self._stream = stream
        self._metrics = metrics  # EMF documents shown (as text), or left out
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            *lines, self._pending = self._pending.split("\n")
            shown = [render(line) for line in lines if self._metrics or not _is_metrics(line)]
            if shown:
                self._stream.write("".join(line + "\n" for line in shown))
                self._stream.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", "utf-8")
