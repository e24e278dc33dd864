"""Captured records (docs/capture.md) as a labelled dataset in the single-turn form (docs/evaluation.md).

Each record is one routed turn. Its label is the teacher's answer when the primary decided it (the
teacher is what measures the primary), the fallback's decision when the fallback decided it (the
teacher is not asked then: that label is already paid for). Turns where the teacher's label differs
from what the primary answered are the ones worth a person's look: they come first, and are flagged.

A line keeps what its turn was routed with: the request's allow-list (`tasks` on its user message, from
a record of schema 2: schema 1 cannot tell an allow-list from the whole registry), and the running task,
whose text the task file holds even when the allow-list left it out.

Nothing of a record's content reaches a message: a record that cannot be used is counted, with the
field at fault, never its text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from taskrouter.core.capture import RecordSchema, RecordTime
from taskrouter.core.events import derive_event
from taskrouter.core.request import Message
from taskrouter.core.task_spec import TaskSpec
from taskrouter.core.tasks import NO_TASK
from taskrouter.core.validation import describe
from taskrouter.evaluation.dataset import Conversation, LabelSource, as_json


class _Decision(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    task: str | None
    backend: Literal["sagemaker", "openai"]  # the primary, or the fallback


class _Teacher(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    answer: str | None  # null when the teacher failed
    error: str | None = None


class Record(BaseModel):
    """The fields of a captured record that a harvest uses; the others are the teacher's and the metrics'."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_: RecordSchema = Field(alias="schema")
    id: Annotated[str, Field(min_length=1, max_length=200)]
    time: RecordTime  # in UTC
    conversation: Annotated[list[Message], Field(min_length=1)]
    current_task: str | None
    tasks: list[TaskSpec]  # as the prompt showed them
    requested_tasks: list[str] | None = None  # schema 2: the request's allow-list as sent; None: none
    running_task: TaskSpec | None = None  # schema 2: the running task, when `tasks` lacks it
    decision: _Decision
    teacher: _Teacher | None

    @property
    def allowed(self) -> list[str] | None:
        """The allow-list the turn was routed with: the request's names the router kept (those it
        showed), in the request's order; None when the request had none."""
        if self.requested_tasks is None:
            return None
        shown = {spec.name for spec in self.tasks}
        return [name for name in dict.fromkeys(self.requested_tasks) if name in shown]

    @property
    def named_tasks(self) -> list[TaskSpec]:
        """Every task the turn's line names: those allowed, and the running one."""
        return [*self.tasks, *([self.running_task] if self.running_task is not None else [])]

    @property
    def primary_decided(self) -> bool:
        """As the teacher function tells it: only these turns have a teacher's answer."""
        return self.decision.backend == "sagemaker"

    def dedup_key(self) -> str:
        """The same conversation, with the same task running and the same tasks allowed: the same turn."""
        return json.dumps(
            [[m.model_dump() for m in self.conversation], self.current_task, [t.model_dump() for t in self.tasks]],
            sort_keys=True,
        )


class Unusable(ValueError):
    """A record that gives no labelled turn; the message names the field, never the content."""


class TeacherFailed(Unusable):
    """The primary decided and the teacher gave no answer: the turn has no label to learn from."""


@dataclass(frozen=True)
class Labelled:
    record: Record
    line: dict[str, Any]  # the dataset line
    disagrees: bool  # the teacher's label differs from what the primary answered


@dataclass
class Harvest:
    lines: list[dict[str, Any]] = field(default_factory=list)  # disagreements first, each part oldest first
    flagged: list[str] = field(default_factory=list)  # the ids of the disagreements
    tasks: list[TaskSpec] = field(default_factory=list)  # the tasks the labels refer to, by name
    tasks_changed: list[str] = field(default_factory=list)  # tasks whose text differs between records
    read: int = 0
    older: int = 0  # before the window
    same_id: int = 0  # records whose id another record kept has: one line per id
    duplicates: int = 0  # the same turn again, under another id
    teacher_failed: int = 0
    unusable: int = 0
    first_unusable: str | None = None


def parse_record(raw: bytes) -> Record:
    try:
        return Record.model_validate_json(raw)
    except ValidationError as error:
        raise Unusable(describe(error)) from None


def labelled(record: Record) -> Labelled:
    """The record as one dataset line in the single-turn form, its label's source set."""
    if record.conversation[-1].role != "user":
        raise Unusable("conversation: the last message is not the user's")
    task, source = _label(record)
    if task is not None and task not in {spec.name for spec in record.tasks}:
        raise Unusable(f"label {task!r} is not among the record's tasks")
    expect = {"task": task, "event": derive_event(record.current_task, task), "source": source}
    messages: list[dict[str, Any]] = [m.model_dump() for m in record.conversation]
    if record.allowed is not None:
        messages[-1]["tasks"] = record.allowed
    messages[-1]["expect"] = expect
    line = {"id": record.id, "current_task": record.current_task, "messages": messages}
    try:
        line = as_json(Conversation.model_validate(line))  # held to the dataset's own rules
    except ValidationError as error:
        raise Unusable(describe(error)) from None
    return Labelled(record, line, disagrees=record.primary_decided and task != record.decision.task)


def _label(record: Record) -> tuple[str | None, LabelSource]:
    if not record.primary_decided:
        return record.decision.task, "fallback"
    if record.teacher is None or record.teacher.answer is None:
        cause = record.teacher.error if record.teacher is not None else None
        raise TeacherFailed(f"teacher: {cause or 'no answer'}")
    return (None if record.teacher.answer == NO_TASK else record.teacher.answer), "teacher"


def harvest(raws: list[bytes], since: datetime | None) -> Harvest:
    """The dataset the records make: each usable record at or after `since` once, the newest of
    those sharing an id, then of duplicates, kept."""
    result = Harvest(read=len(raws))
    by_id: dict[str, Labelled] = {}
    for raw in raws:
        try:
            record = parse_record(raw)
            if since is not None and record.time < since:
                result.older += 1
                continue
            made = labelled(record)
        except TeacherFailed:
            result.teacher_failed += 1
            continue
        except Unusable as error:
            result.unusable += 1
            result.first_unusable = result.first_unusable or str(error)
            continue
        kept = by_id.get(record.id)
        if kept is not None:  # a record stored twice (a retried write), or a copy: the dataset's ids are unique
            result.same_id += 1
            if kept.record.time >= record.time:
                continue
        by_id[record.id] = made
    newest: dict[str, Labelled] = {}
    for made in by_id.values():
        key = made.record.dedup_key()
        kept = newest.get(key)
        if kept is not None:
            result.duplicates += 1
            if _order(kept.record) > _order(made.record):
                continue
        newest[key] = made
    ordered = sorted(newest.values(), key=lambda made: (not made.disagrees, _order(made.record)))
    result.lines = [made.line for made in ordered]
    result.flagged = [made.record.id for made in ordered if made.disagrees]
    result.tasks, result.tasks_changed = _tasks_of([made.record for made in ordered])
    return result


def _order(record: Record) -> tuple[datetime, str]:
    return record.time, record.id


def _tasks_of(records: list[Record]) -> tuple[list[TaskSpec], list[str]]:
    """The union of the tasks the records name (their running tasks too), each as the newest record
    showed it; the names whose text changed."""
    latest: dict[str, TaskSpec] = {}
    changed: set[str] = set()
    for record in sorted(records, key=_order):
        for spec in record.named_tasks:
            if spec.name in latest and latest[spec.name] != spec:
                changed.add(spec.name)
            latest[spec.name] = spec
    return [latest[name] for name in sorted(latest)], sorted(changed)


def task_file(tasks: list[TaskSpec]) -> str:
    """The task file's text, as `taskrouter tasks import` and `eval --tasks` read it."""
    return json.dumps({"tasks": [spec.model_dump() for spec in tasks]}, ensure_ascii=False, indent=2) + "\n"


def dataset_text(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
