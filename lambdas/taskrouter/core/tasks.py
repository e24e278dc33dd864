"""A task of the registry, and the registry as the router sees it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

MAX_TASK_NAME_CHARS = 64
TASK_NAME_PATTERN = re.compile(rf"^[a-z][a-z0-9_]{{2,{MAX_TASK_NAME_CHARS - 1}}}$")
NO_TASK = "none"  # the answer a backend gives when no task fits


def check_task_name(name: str) -> str:
    """The contract's name rule, plus the one name reserved for "no task fits" (a task of that name
    could never be told apart from the answer)."""
    if not TASK_NAME_PATTERN.fullmatch(name):  # `$` alone would admit a trailing newline
        raise ValueError(f"must match {TASK_NAME_PATTERN.pattern}")
    if name == NO_TASK:
        raise ValueError(f"{NO_TASK!r} is reserved: it is the answer meaning no task fits")
    return name


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    examples: tuple[str, ...] = field(default_factory=tuple)
    version: int = 1
    updated_at: str = ""


def tasks_sha256(tasks: Iterable[Task]) -> str:
    """A task list's content (names, descriptions, examples; not versions or times, which differ
    between two registries holding the same tasks), as compact JSON sorted by name: the one digest of
    a task list, in captured records, evaluation reports and adapter manifests alike."""
    listed = sorted(
        ({"name": t.name, "description": t.description, "examples": list(t.examples)} for t in tasks),
        key=lambda task: task["name"],
    )
    canonical = json.dumps(listed, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class TaskSource(Protocol):
    """Where the router reads the live task list from (DynamoDB in AWS, dynalite locally)."""

    def tasks(self) -> dict[str, Task]:
        """All tasks by name. Raises `RegistryUnavailable` when no copy can be had."""
        ...


class RegistryUnavailable(Exception):
    """The registry could not be read and no earlier copy is held."""
