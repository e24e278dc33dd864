"""Labelled conversations (docs/evaluation.md): one JSON object a line.

Multi-turn form: each user message is labelled with the task and event it should route to, and is one
routed turn: the router gets the conversation up to and including it, and, as `current_task`, the
task the labels before it left running. Single-turn form (what a harvest writes): a top-level
`current_task` and a label on the last user message only, one routed turn with that running task.
A labelled user message may carry `tasks`, its request's allow-list (what a harvested turn was routed
with): the turn is routed, trained and reviewed over those tasks only.

Messages follow the API's own rules for a message (`core.request.Message`); labels are task names (or
null for no task), so that no label can be taken for the report's pseudo-labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from taskrouter.core.events import Event, derive_event
from taskrouter.core.request import Message
from taskrouter.core.tasks import check_task_name
from taskrouter.core.validation import describe

TaskName = Annotated[str, AfterValidator(check_task_name)]
LabelSource = Literal["teacher", "fallback", "reviewed", "written"]


class Expected(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    task: TaskName | None
    event: Event
    source: LabelSource | None = None  # who labelled the turn, when known


class LabelledMessage(Message):
    """A message of the API's shape, a user message possibly labelled, and restricted to an allow-list."""

    tasks: list[TaskName] | None = None  # the request's `tasks` for this turn; None: every task
    expect: Expected | None = None

    @model_validator(mode="after")
    def _labels_on_user_messages(self) -> LabelledMessage:
        if self.role == "assistant" and self.expect is not None:
            raise ValueError("expect stands on user messages only")
        if self.tasks is None:
            return self
        if self.expect is None:
            raise ValueError("tasks stands on a labelled user message only: it is the allow-list of that routed turn")
        if self.expect.task is not None and self.expect.task not in self.tasks:
            raise ValueError(
                f"expect.task {self.expect.task!r} is not among the message's tasks: the router could never answer it"
            )
        return self


class Conversation(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=200)]
    # Present (even null): the single-turn form, this the task running before its one labelled turn.
    current_task: TaskName | None = None
    messages: Annotated[list[LabelledMessage], Field(min_length=1)]

    @property
    def single_turn(self) -> bool:
        return "current_task" in self.model_fields_set

    @model_validator(mode="after")
    def _labels_where_the_form_wants_them(self) -> Conversation:
        users = [index for index, message in enumerate(self.messages) if message.role == "user"]
        if self.single_turn:
            if not users:
                raise ValueError("messages: a line with a top-level current_task needs a user message")
            for index in users[:-1]:
                if self.messages[index].expect is not None:
                    raise ValueError(
                        f"messages[{index}].expect: a line with a top-level current_task labels its last user "
                        "message only"
                    )
            if self.messages[users[-1]].expect is None:
                raise ValueError(f"messages[{users[-1]}]: the last user message needs its expect label")
            return self._events_follow_from_the_tasks()
        for index in users:
            if self.messages[index].expect is None:
                raise ValueError(
                    f"messages[{index}]: a user message needs its expect label: each one is a routed turn (or "
                    "give the line a top-level current_task and label its last user message only)"
                )
        return self._events_follow_from_the_tasks()

    def _events_follow_from_the_tasks(self) -> Conversation:
        """A label's event is the one its task means after the task running before it."""
        running = self.current_task
        for index, message in enumerate(self.messages):
            if message.expect is None:
                continue
            derived = derive_event(running, message.expect.task)
            if message.expect.event != derived:
                raise ValueError(
                    f"messages[{index}].expect: event {message.expect.event!r} does not follow from task "
                    f"{message.expect.task!r} with {running!r} running (that is {derived!r})"
                )
            running = message.expect.task
        return self


@dataclass(frozen=True)
class Turn:
    """One routed turn: the request the router gets and the label it should answer."""

    conversation: str  # the conversation's id
    index: int  # the user message's index in the conversation
    messages: tuple[dict[str, str], ...]  # the conversation up to and including it, without labels
    current_task: str | None
    expected: Expected
    tasks: tuple[str, ...] | None = None  # the request's allow-list; None: every task of the target


class DatasetError(ValueError):
    """A dataset line that is not a labelled conversation; the message names the line and field."""


def load_dataset(path: Path) -> list[Conversation]:
    return parse_dataset(path.read_bytes(), path.name)


def parse_dataset(raw: bytes, source: str) -> list[Conversation]:
    """The conversations of a dataset's bytes (from `source`, which errors name)."""
    conversations, seen = [], set()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is no part of the first line
    except UnicodeDecodeError as error:
        raise DatasetError(f"{source}: not UTF-8 (byte {error.start})") from None
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may stand in a string
        if not line.strip():
            continue
        try:
            conversation = Conversation.model_validate_json(line)
        except ValidationError as error:
            raise DatasetError(f"{source}:{number}: {describe(error)}") from None
        if conversation.id in seen:
            raise DatasetError(f"{source}:{number}: id {conversation.id!r} appears twice")
        seen.add(conversation.id)
        conversations.append(conversation)
    if not conversations:
        raise DatasetError(f"{source}: no conversation")
    return conversations


def as_json(conversation: Conversation) -> dict[str, Any]:
    """A conversation as a dataset line holds it: `expect` on user messages only, a null task kept, the
    single-turn form's `current_task` kept, a label's `source` only when known, a turn's `tasks` when given."""
    return {
        "id": conversation.id,
        **({"current_task": conversation.current_task} if conversation.single_turn else {}),
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                **({"tasks": list(m.tasks)} if m.tasks is not None else {}),
                **({"expect": _label_json(m.expect)} if m.expect else {}),
            }
            for m in conversation.messages
        ],
    }


def _label_json(expected: Expected) -> dict[str, Any]:
    label: dict[str, Any] = {"task": expected.task, "event": expected.event}
    return label | ({"source": expected.source} if expected.source is not None else {})


def turns_of(conversations: list[Conversation]) -> list[Turn]:
    """Every routed turn, in dataset order."""
    turns = []
    for conversation in conversations:
        running = conversation.current_task  # None in the multi-turn form: its first turn starts afresh
        for index, message in enumerate(conversation.messages):
            if message.expect is None:
                continue
            history = tuple({"role": m.role, "content": m.content} for m in conversation.messages[: index + 1])
            allowed = None if message.tasks is None else tuple(message.tasks)
            turns.append(Turn(conversation.id, index, history, running, message.expect, allowed))
            running = message.expect.task
    return turns
