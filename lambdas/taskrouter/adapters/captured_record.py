"""A captured turn as the router sends it to the teacher function (docs/capture.md, "The record").

Only the fields the teacher reads are checked, strictly enough that a record can neither break its
prompt, its object key nor its metrics; every other field is kept as it came and written back
unchanged. Whatever the event, `read_record` gives a usable turn or raises `InvalidRecord`: the
teacher function drops what raises that, and Lambda would retry anything else, to fail again.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskrouter.core.capture import RecordSchema, RecordTime
from taskrouter.core.request import Message, Strategy
from taskrouter.core.tasks import NO_TASK, TASK_NAME_PATTERN, Task
from taskrouter.core.validation import describe

BASE_ADAPTER = "base"  # the base model alone, in the record and in metrics
TaskName = Annotated[str, Field(pattern=TASK_NAME_PATTERN.pattern)]
MAX_DIMENSION_CHARS = 1024  # a metric's dimension value (the adapter's name), as CloudWatch takes it


class InvalidRecord(ValueError):
    """The event is not a record the teacher can use. Its message names fields, never their content."""


class _Checked(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class _Message(_Checked):
    role: Literal["user", "assistant"]
    content: str  # redaction may lengthen a message past the API's bound: not held to it here


class _Task(_Checked):
    name: TaskName
    description: str
    examples: list[str] = []


class _Decision(_Checked):
    task: str | None
    backend: Literal["sagemaker", "openai"]


class _Primary(_Checked):
    answer: str | None = None  # a task name or "none"; compared with the teacher's, nothing more
    # Its confidence: a metric's band (teacher_metrics.py), so a probability or nothing.
    probability: Annotated[float, Field(ge=0, le=1)] | None = None


class _Sampling(_Checked):
    uniform: bool


class _Record(_Checked):
    schema_: Annotated[RecordSchema, Field(alias="schema")]
    id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]  # the object's file name: nothing else fits
    time: RecordTime  # in UTC: the object's date and hour
    conversation: Annotated[list[_Message], Field(min_length=1)]
    current_task: TaskName | None  # the prompt's running-task line: a name, never free text
    tasks: list[_Task]
    strategy: Literal["zero_shot", "few_shot_cot", "react"]  # Strategy's values, as JSON carries them
    adapter: str | None = None
    decision: _Decision
    primary: _Primary | None = None
    sampling: _Sampling

    @field_validator("adapter")
    @classmethod
    def _a_dimension_value(cls, value: str | None) -> str | None:
        if value is not None and not (value.strip() and len(value) <= MAX_DIMENSION_CHARS):
            raise ValueError(f"must be an adapter's name (1 to {MAX_DIMENSION_CHARS} characters, not blank), or null")
        return value


class CapturedTurn:
    """A validated record: what the teacher needs, and the record itself to complete and store."""

    def __init__(self, record: dict[str, Any], checked: _Record) -> None:
        self.record = record
        self.id = checked.id
        self.time = checked.time
        self.conversation = tuple(Message.model_construct(role=m.role, content=m.content) for m in checked.conversation)
        self.current_task = checked.current_task  # the router's running task, by name
        # The tasks the router showed (its allow-list's, fitted): the teacher is asked over the same ones.
        self.allowed = {t.name: Task(t.name, t.description, tuple(t.examples)) for t in checked.tasks}
        self.strategy = Strategy(checked.strategy)
        self.adapter = checked.adapter or BASE_ADAPTER
        self.decided_task = checked.decision.task
        # The answer users got was the primary's: it kept its answer (not escalated under a threshold).
        self.decided_by_primary = checked.decision.backend == "sagemaker"
        primary = checked.primary or _Primary()
        # What the teacher judges: the primary's own answer, escalated or not; for a record without it
        # (schema 1, a primary that did not answer), the decision's task, which was the primary's when it decided.
        self.primary_answer = primary.answer if primary.answer is not None else (
            (self.decided_task or NO_TASK) if self.decided_by_primary else None
        )
        self.confidence = primary.probability if primary.answer is not None else None
        self.uniform = checked.sampling.uniform

    def completed(self, teacher: dict[str, Any] | None) -> dict[str, Any]:
        """The record with its `teacher` field set."""
        return {**self.record, "teacher": teacher}

    @property
    def primary_answered(self) -> bool:
        """The teacher is asked: the primary gave an answer (a turn the fallback decided alone has its
        label already, paid for)."""
        return self.primary_answer is not None

    @property
    def escalated(self) -> bool:
        """The primary answered, and the fallback's answer was served instead (`low_confidence`)."""
        return self.primary_answered and not self.decided_by_primary


def read_record(event: Any) -> CapturedTurn:
    """The record an asynchronous invocation carries (its payload, decoded by Lambda)."""
    if not isinstance(event, dict):
        raise InvalidRecord(f"the event is a JSON {type(event).__name__}, not an object")
    try:
        checked = _Record.model_validate(event)
    except ValidationError as error:
        raise InvalidRecord(describe(error)) from None
    try:  # the fields kept unread are written back as they came: they must make JSON again
        json.dumps(event, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        raise InvalidRecord(
            "the event holds a value JSON cannot write (NaN, infinity, an integer of over 4,300 digits)"
        ) from None
    return CapturedTurn(event, checked)
