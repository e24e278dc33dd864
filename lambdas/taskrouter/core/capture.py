"""What the router captures of a routed turn for the shadow teacher (docs/capture.md): whether the turn
is drawn, the record, and the redaction applied to it before it leaves the router.

Pure: no AWS, no clock and no randomness of its own; the caller gives the random draws, the time and
the record's id, so that a seeded generator makes the sampling reproducible in tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator

from taskrouter.core.prompting import EXAMPLES_SHOWN, shown_messages
from taskrouter.core.redaction import REDACTION_KINDS, redact
from taskrouter.core.request import Message
from taskrouter.core.router import Decision
from taskrouter.core.tasks import Task, tasks_sha256

SCHEMA = 2  # 2: the request's allow-list (`requested_tasks`) and the running task's text (`running_task`)
READ_SCHEMAS = (1, 2)  # the versions the teacher and harvest read
BASE_ADAPTER = "base"  # the base model alone: it was trained on no task, so no task is unseen by it
SamplingReason = Literal["primary", "fallback", "unseen"]


# -- sampling --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingPolicy:
    """Shares of turns captured, each from 0 to 1."""

    share: float  # of the turns the primary decided: the uniform sample
    fallback_share: float  # of the turns the fallback decided
    unseen_share: float = 1.0  # of the primary's other turns whose allowed tasks the adapter never saw


@dataclass(frozen=True)
class Draw:
    """A turn drawn for capture: its total chance of being drawn, and whether it belongs to the
    uniform sample (only those measure the primary without bias: `TeacherAgreement`)."""

    probability: float
    uniform: bool
    reason: SamplingReason

    def as_json(self) -> dict[str, Any]:
        return {"probability": self.probability, "uniform": self.uniform, "reason": self.reason}


def draw(
    policy: SamplingPolicy, *, primary_decided: bool, unseen: bool, random: Callable[[], float]
) -> Draw | None:
    """Whether this turn is captured, by independent draws of `random()` (uniform in [0, 1)).

    A turn the primary decided is first drawn at `share`, whatever its tasks: that draw alone makes the
    uniform sample, so oversampling cannot bias it. Only a turn that draw missed, and whose allowed
    tasks include some the adapter never saw, gets a second draw at `unseen_share`. A turn the fallback
    decided is drawn at `fallback_share` (its label is the fallback's, so it is never uniform)."""
    if not primary_decided:
        return Draw(policy.fallback_share, False, "fallback") if random() < policy.fallback_share else None
    second = policy.unseen_share if unseen else 0.0
    probability = policy.share + (1 - policy.share) * second
    if random() < policy.share:
        return Draw(probability, True, "primary")
    if unseen and random() < second:
        return Draw(probability, False, "unseen")
    return None


# -- the serving adapter ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ServingAdapter:
    """The adapter the primary serves and the tasks its manifest lists (None: not known)."""

    name: str = BASE_ADAPTER
    tasks: frozenset[str] | None = None

    def unseen(self, names: Iterable[str]) -> tuple[str, ...]:
        """The names its manifest does not list, sorted; none for the base model, or with no manifest."""
        if self.name == BASE_ADAPTER or self.tasks is None:
            return ()
        return tuple(sorted(set(names) - self.tasks))


# -- the record ------------------------------------------------------------------------------------
def iso_time(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds: `2026-12-02T07:49:24.123Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _read_schema(value: int) -> int:
    if value not in READ_SCHEMAS:
        raise ValueError(f"must be {' or '.join(map(str, READ_SCHEMAS))}: the record formats read here")
    return value


def _read_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 time, as a string")
    return record_time(value)


# A record's `schema` and `time` as its readers (the teacher, harvest) validate them.
RecordSchema = Annotated[int, AfterValidator(_read_schema)]
RecordTime = Annotated[datetime, BeforeValidator(_read_time)]


def record_time(value: str) -> datetime:
    """A record's `time` in UTC, as the teacher (its object key) and harvest (its window) read it.

    Raises ValueError with a message that never quotes the value. The year must have four digits in
    UTC: the key's partition is `date=YYYY-MM-DD`, and a time such as `0001-01-01T00:30:00+01:00`,
    valid ISO 8601, has no UTC year at all (converting it overflows)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:  # its own message would quote the value
        raise ValueError("must be an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError("must carry its time zone (UTC, Z)")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be a time of the years 1000 to 9999 in UTC") from None
    if moment.year < 1000:
        raise ValueError("must be a time of the years 1000 to 9999 in UTC")
    return moment


def task_json(task: Task) -> dict[str, Any]:
    """A task as a record holds it: the examples the prompt shows, at most."""
    return {"name": task.name, "description": task.description, "examples": list(task.examples[:EXAMPLES_SHOWN])}


def build_record(
    *,
    record_id: str,
    decided_at: datetime,
    conversation: Sequence[Message],
    decision: Decision,
    adapter: ServingAdapter,
    sampled: Draw,
    latency_ms: float,
    redaction: Collection[str],
    requested_tasks: Sequence[str] | None,
) -> dict[str, Any]:
    """The captured turn as docs/capture.md defines it, redacted; the teacher function adds `teacher`.

    `requested_tasks` is the request's allow-list as sent (None: it had none, and `tasks` is then the
    whole registry): only with it can a harvested turn be replayed over the tasks it was routed with."""
    kinds = [kind for kind in REDACTION_KINDS if kind in redaction]
    # The running task's text when the allow-list left it out: the prompt names it, and a replay needs
    # it in its registry, or the router would take it for none.
    running = None
    if decision.current_task is not None and decision.current_task not in {task.name for task in decision.shown_tasks}:
        running = decision.registry.get(decision.current_task)
    return {
        "schema": SCHEMA,
        "id": record_id,
        "time": iso_time(decided_at),
        "conversation": [
            {"role": message.role, "content": redact(message.content, kinds)}
            for message in shown_messages(conversation, decision.transcript)
        ],
        "current_task": decision.current_task,
        "tasks": [task_json(task) for task in decision.shown_tasks],
        "requested_tasks": None if requested_tasks is None else list(requested_tasks),
        "running_task": None if running is None else task_json(running),
        "registry_sha256": tasks_sha256(decision.registry.values()),  # as a report's `tasks_sha256`
        "strategy": decision.strategy.value,
        "adapter": adapter.name,
        "unseen_tasks": list(adapter.unseen(task.name for task in decision.shown_tasks)),
        "decision": {
            "task": decision.task,
            "event": decision.event,
            "backend": decision.backend,
            "fallback_reason": decision.fallback_reason,
        },
        "primary": {
            "answer": decision.primary.answer,
            "probability": decision.primary.confidence,
            "latency_ms": decision.primary.latency_ms,
        },
        "latency_ms": latency_ms,
        "sampling": sampled.as_json(),
        "redaction": kinds,
    }


def encode(record: dict[str, Any]) -> bytes:
    """One line of UTF-8 JSON (a request's text holds no lone surrogate: its parser refuses them)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
