"""What an evaluation routes its turns through: the router in this process (`local`) or a running API."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from taskrouter.client import TaskRouterClient, TaskRouterError
from taskrouter.core.errors import ApiError
from taskrouter.core.request import parse_route_request
from taskrouter.core.task_spec import load_task_file
from taskrouter.core.tasks import Task
from taskrouter.core.validation import describe
from taskrouter.evaluation.dataset import Turn


@dataclass(frozen=True)
class Outcome:
    """What one routed turn got back, whatever the target."""

    status: int  # the HTTP status (the in-process router's: 200, or its error's)
    latency_ms: float  # the round trip as the caller saw it
    task: str | None = None
    event: str | None = None
    backend: str | None = None
    fallback_reason: str | None = None
    error: str | None = None  # the error's code, when status is not 200


class Target(Protocol):
    def route(self, turn: Turn, strategy: str | None) -> Outcome: ...


class FixedTaskSource:
    """A registry that is a task file, for `--tasks`."""

    def __init__(self, tasks: list[Task]) -> None:
        self._tasks = {task.name: task for task in tasks}

    def tasks(self) -> dict[str, Task]:
        return self._tasks


class LocalTarget:
    """The router in this process, configured from the environment as `make local` is (CONTRACT
    section 3): the same backends, timeouts and strategies. Its registry is the task file when one
    is given, else the environment's table."""

    def __init__(self, tasks_file: Path | None = None, concurrency: int = 1) -> None:
        from taskrouter.adapters.runtime import build_router
        from taskrouter.adapters.settings import RuntimeSettings

        environ: dict[str, str] = dict(os.environ)
        registry = None
        if tasks_file is not None:
            try:
                registry = FixedTaskSource(load_task_file(tasks_file, updated_at=""))
            except ValidationError as error:
                raise ValueError(f"{tasks_file}: {describe(error)}") from None
            environ.setdefault("TASKROUTER_TABLE_NAME", "unused-the-task-file-is-the-registry")
        self._router = build_router(RuntimeSettings.from_env(environ), registry, concurrent_requests=concurrency)

    def route(self, turn: Turn, strategy: str | None) -> Outcome:
        started = time.perf_counter()
        try:  # validated as the API validates it: a turn it would refuse is a 400 here too
            request = parse_route_request(
                json.dumps({"conversation": list(turn.messages), "current_task": turn.current_task, "strategy": strategy}).encode()
            )
            decision = self._router.route(request)
        except ApiError as error:
            return Outcome(error.status, _elapsed_ms(started), error=error.code)
        return Outcome(
            200, _elapsed_ms(started), decision.task, decision.event, decision.backend, decision.fallback_reason
        )


class ApiTarget:
    """A running API (`make local` or a deployed stage) at `base_url`."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self._client = TaskRouterClient(base_url=base_url, api_key=api_key)

    def route(self, turn: Turn, strategy: str | None) -> Outcome:
        started = time.perf_counter()
        try:
            body: Any = self._client.route(list(turn.messages), turn.current_task, strategy=strategy)
            return Outcome(
                200, _elapsed_ms(started), body["task"], body["event"], body["backend"], body["fallback_reason"]
            )
        except TaskRouterError as error:
            return Outcome(error.status, _elapsed_ms(started), error=error.code)
        except (OSError, ValueError, KeyError, TypeError) as error:  # a dropped connection, a body not the contract's
            return Outcome(0, _elapsed_ms(started), error=f"transport: {type(error).__name__}")


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
