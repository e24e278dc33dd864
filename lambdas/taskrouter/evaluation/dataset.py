"""Labelled conversations (CONTRACT section 4): one JSON object a line, each user message labelled with
the task and event it should route to. Each user message is one routed turn: the router gets the
conversation up to and including it, and, as `current_task`, the task the labels before it left
running."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from taskrouter.core.events import Event, derive_event
from taskrouter.core.validation import describe


class Expected(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    task: str | None
    event: Event


class LabelledMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    role: Literal["user", "assistant"]
    content: Annotated[str, Field(min_length=1, max_length=4000)]
    expect: Expected | None = None

    @model_validator(mode="after")
    def _labels_on_user_messages(self) -> LabelledMessage:
        if self.role == "user" and self.expect is None:
            raise ValueError("a user message needs its expect label: each one is a routed turn")
        if self.role == "assistant" and self.expect is not None:
            raise ValueError("expect stands on user messages only")
        return self


class Conversation(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=200)]
    messages: Annotated[list[LabelledMessage], Field(min_length=1)]

    @model_validator(mode="after")
    def _events_follow_from_the_tasks(self) -> Conversation:
        """A label's event is the one its task means after the task the labels before it left running."""
        running = None
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


class DatasetError(ValueError):
    """A dataset line that is not a labelled conversation; the message names the line and field."""


def load_dataset(path: Path) -> list[Conversation]:
    conversations, seen = [], set()
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no part of the first line
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path.name}: not UTF-8 (byte {error.start})") from None
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may stand in a string
        if not line.strip():
            continue
        try:
            conversation = Conversation.model_validate_json(line)
        except ValidationError as error:
            raise DatasetError(f"{path.name}:{number}: {describe(error)}") from None
        if conversation.id in seen:
            raise DatasetError(f"{path.name}:{number}: id {conversation.id!r} appears twice")
        seen.add(conversation.id)
        conversations.append(conversation)
    if not conversations:
        raise DatasetError(f"{path.name}: no conversation")
    return conversations


def as_json(conversation: Conversation) -> dict[str, Any]:
    """A conversation as a dataset line holds it: `expect` on user messages only, a null task kept."""
    return {
        "id": conversation.id,
        "messages": [
            {"role": m.role, "content": m.content, **({"expect": m.expect.model_dump()} if m.expect else {})}
            for m in conversation.messages
        ],
    }


def turns_of(conversations: list[Conversation]) -> list[Turn]:
    """Every routed turn, in dataset order."""
    turns = []
    for conversation in conversations:
        running = None
        for index, message in enumerate(conversation.messages):
            if message.expect is None:
                continue
            history = tuple({"role": m.role, "content": m.content} for m in conversation.messages[: index + 1])
            turns.append(Turn(conversation.id, index, history, running, message.expect))
            running = message.expect.task
    return turns
