"""Tasks as people write them (docs/api.md, PUT /tasks/{name}) and task files; validated with the same rules
wherever tasks are written. Kept apart from `tasks`, which the router imports on every cold start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskrouter.core.tasks import Task, check_task_name


MAX_DESCRIPTION_CHARS = 500
MAX_EXAMPLE_CHARS = 300
MAX_EXAMPLES = 10


class TaskBody(BaseModel):
    """The body of `PUT /tasks/{name}`: what a writer sets; version and updated_at are the server's."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    description: Annotated[str, Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS)]
    examples: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_EXAMPLE_CHARS)]], Field(max_length=MAX_EXAMPLES)
    ] = []


class TaskSpec(TaskBody):
    """A task as people write it in a task file."""

    name: str

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        return check_task_name(name)

    def to_task(self, *, version: int, updated_at: str) -> Task:
        return Task(self.name, self.description, tuple(self.examples), version, updated_at)


class TaskFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tasks: list[TaskSpec]


def load_task_file(path: Path, *, updated_at: str) -> list[Task]:
    """The tasks of a JSON task file (`{"tasks": [...]}`), validated; names must be unique."""
    return parse_task_file(path.read_bytes(), path.name, updated_at=updated_at)


def parse_task_file(raw: bytes, source: str, *, updated_at: str) -> list[Task]:
    """A task file's bytes (from `source`, which errors name): pydantic's ValidationError for a
    broken rule, ValueError for repeated names."""
    specs = TaskFile.model_validate_json(raw).tasks
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{source}: duplicate task names {duplicates}")
    return [spec.to_task(version=1, updated_at=updated_at) for spec in specs]
