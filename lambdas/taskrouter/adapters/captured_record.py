"""A captured turn as the router sends it to the teacher function (docs/capture.md, "The record").

Only the fields the teacher reads are checked, strictly enough that a record can neither break its
prompt nor its object key; every other field is kept as it came and written back unchanged.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskrouter.core.request import Message, Strategy
from taskrouter.core.tasks import TASK_NAME_PATTERN, Task
from taskrouter.core.validation import describe

SCHEMA_VERSION = 1
BASE_ADAPTER = "base"  # the base model alone, in the record and in metrics


class InvalidRecord(ValueError):
    """The event is not a record the teacher can use. Its message names fields, never their content."""


class _Checked(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class _Message(_Checked):
    role: Literal["user", "assistant"]
    content: str  # redaction may lengthen a message past the API's bound: not held to it here


class _Task(_Checked):
    name: Annotated[str, Field(pattern=TASK_NAME_PATTERN.pattern)]
    description: str
    examples: list[str] = []


class _Decision(_Checked):
    task: str | None
    backend: Literal["sagemaker", "openai"]


class _Sampling(_Checked):
    uniform: bool


class _Record(_Checked):
    schema_: Annotated[Literal[1], Field(alias="schema")]
    id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]  # the object's file name: nothing else fits
    time: str
    conversation: Annotated[list[_Message], Field(min_length=1)]
    current_task: str | None
    tasks: list[_Task]
    strategy: Literal["zero_shot", "few_shot_cot", "react"]  # Strategy's values, as JSON carries them
    adapter: str | None = None
    decision: _Decision
    sampling: _Sampling

    @field_validator("time")
    @classmethod
    def _utc_time(cls, value: str) -> str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:  # its own message would quote the value
            raise ValueError("must be an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise ValueError("must carry its time zone (UTC, Z)")
        return value


class CapturedTurn:
    """A validated record: what the teacher needs, and the record itself to complete and store."""

    def __init__(self, record: dict[str, Any], checked: _Record) -> None:
        self.record = record
        self.id = checked.id
        self.time = datetime.fromisoformat(checked.time).astimezone(timezone.utc)
        self.conversation = tuple(Message.model_construct(role=m.role, content=m.content) for m in checked.conversation)
        self.current_task = checked.current_task
        self.allowed = {t.name: Task(t.name, t.description, tuple(t.examples)) for t in checked.tasks}
        self.strategy = Strategy(checked.strategy)
        self.adapter = checked.adapter or BASE_ADAPTER
        self.decided_task = checked.decision.task
        self.decided_by_primary = checked.decision.backend == "sagemaker"
        self.uniform = checked.sampling.uniform

    def completed(self, teacher: dict[str, Any] | None) -> dict[str, Any]:
        """The record with its `teacher` field set."""
        return {**self.record, "teacher": teacher}


def read_record(event: Any) -> CapturedTurn:
    """The record an asynchronous invocation carries (its payload, decoded by Lambda)."""
    if not isinstance(event, dict):
        raise InvalidRecord(f"the event is a JSON {type(event).__name__}, not an object")
    try:
        return CapturedTurn(event, _Record.model_validate(event))
    except ValidationError as error:
        raise InvalidRecord(describe(error)) from None
