"""What an evaluation routes its turns through: the router in this process (`local`) or a running API.

Both send a turn as the same `POST /route` body and judge it by the API's own rules, so that one
dataset gets one verdict whichever the target: the in-process router refuses what the API refuses,
with the API's status and code, and a turn has the same deadline at both."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from taskrouter.client import has_http_scheme
from taskrouter.core.errors import ApiError, NoBackendAvailable
from taskrouter.core.request import decode_body, parse_route_request
from taskrouter.core.task_spec import load_task_file
from taskrouter.core.tasks import NO_TASK, Task
from taskrouter.core.validation import describe
from taskrouter.evaluation.answers import NotAnAnswer, error_code, route_answer, task_list
from taskrouter.evaluation.bounded_http import AnswerTooLarge, exchange
from taskrouter.evaluation.dataset import Turn

DEFAULT_TURN_TIMEOUT_S = 15.0  # above the router's own longest budget (10 s), so that it never cuts a decision


@dataclass(frozen=True)
class Outcome:
    """What one routed turn got back, whatever the target."""

    status: int  # the HTTP status (the in-process router's: 200, or its error's); 0: no answer
    latency_ms: float  # the round trip as the caller saw it
    task: str | None = None
    event: str | None = None
    backend: str | None = None
    fallback_reason: str | None = None
    error: str | None = None  # why the turn has no decision: an error code, a timeout, an answer not the API's
    confidence: float | None = None  # the primary's answer probability, whenever it answered (escalated or not)
    # The primary's own answer (None: no task) where it is known (`primary_known`): a decision the
    # fallback made over an escalated answer hides it from a URL target.
    primary_task: str | None = None
    primary_known: bool = False


class Target(Protocol):
    def tasks(self) -> list[Task] | None:
        """The task list the target routes over; None when it cannot be known."""
        ...

    def route(self, turn: Turn, strategy: str | None) -> Outcome: ...


def request_body(turn: Turn, strategy: str | None) -> str:
    """A turn's `POST /route` body, the same text for every target (and so the same size)."""
    body: dict[str, object] = {"conversation": list(turn.messages)}
    if turn.current_task is not None:  # absent means none
        body["current_task"] = turn.current_task
    if turn.tasks is not None:  # the allow-list the turn was routed with (a harvested one's); absent: every task
        body["tasks"] = list(turn.tasks)
    if strategy is not None:
        body["strategy"] = strategy
    return json.dumps(body)


def refusal(turn: Turn, strategy: str | None) -> ApiError | None:
    """Why the API would refuse this turn's request (body size, message count, content lengths...), by
    the router's own request validation; None when it would take it."""
    try:
        parse_route_request(decode_body(request_body(turn, strategy), is_base64=False))
    except ApiError as error:
        return error
    return None


def timed_out(turn_timeout_s: float) -> str:
    return f"timeout: no answer within {turn_timeout_s:g} s"


class FixedTaskSource:
    """A registry that is a task file, for `--tasks`."""

    def __init__(self, tasks: list[Task]) -> None:
        self._tasks = {task.name: task for task in tasks}

    def tasks(self) -> dict[str, Task]:
        return self._tasks


class LocalTarget:
    """The router in this process, configured from the environment as `make local` is: the same
    backends, timeouts and strategies. Its registry is the task file when one is given, else the
    environment's table."""

    def __init__(
        self, tasks_file: Path | None = None, concurrency: int = 1, turn_timeout_s: float = DEFAULT_TURN_TIMEOUT_S
    ) -> None:
        from taskrouter.composition.router_runtime import build_router
        from taskrouter.adapters.settings import RuntimeSettings

        environ: dict[str, str] = dict(os.environ)
        self._file_tasks: list[Task] | None = None
        registry = None
        if tasks_file is not None:
            try:
                self._file_tasks = load_task_file(tasks_file, updated_at="")
            except ValidationError as error:
                raise ValueError(f"--tasks {tasks_file}: {describe(error)}") from None
            except OSError as error:
                raise ValueError(f"--tasks {tasks_file}: {error.strerror or error}") from None
            except ValueError as error:  # names repeated
                raise ValueError(f"--tasks {tasks_file}: {error}") from None
            registry = FixedTaskSource(self._file_tasks)
            environ.setdefault("TASKROUTER_TABLE_NAME", "unused-the-task-file-is-the-registry")
        self._settings = RuntimeSettings.from_env(environ)
        self._router = build_router(self._settings, registry, concurrent_requests=concurrency)
        self._turn_timeout_s = turn_timeout_s

    def tasks(self) -> list[Task] | None:
        if self._file_tasks is not None:
            return self._file_tasks
        return _table_tasks(self._settings.table_name)

    def route(self, turn: Turn, strategy: str | None) -> Outcome:
        started = time.perf_counter()
        try:  # validated as the API validates it: a turn it would refuse gets its status and code here too
            request = parse_route_request(decode_body(request_body(turn, strategy), is_base64=False))
            decision = self._router.route(request)
        except ApiError as error:
            return Outcome(error.status, _elapsed_ms(started), error=error.code)
        except Exception:  # what the API answers to an unforeseen failure: a 503, never a 500
            return Outcome(NoBackendAvailable.status, _elapsed_ms(started), error=NoBackendAvailable.code)
        latency_ms = _elapsed_ms(started)
        if latency_ms > self._turn_timeout_s * 1000:  # the deadline the URL target would have cut it at
            return Outcome(0, latency_ms, error=timed_out(self._turn_timeout_s))
        primary = decision.primary
        return Outcome(
            200, latency_ms, decision.task, decision.event, decision.backend, decision.fallback_reason,
            confidence=primary.confidence,
            primary_task=None if primary.answer in (None, NO_TASK) else primary.answer,
            primary_known=primary.answer is not None,
        )  # fmt: skip


def _table_tasks(table_name: str) -> list[Task] | None:
    """The environment's registry table, read once with the router's bounds; None when it cannot be."""
    import botocore.session
    from botocore.config import Config

    from taskrouter.adapters.dynamodb_registry import read_all_tasks
    from taskrouter.adapters.settings import REGISTRY_CONNECT_TIMEOUT_S, REGISTRY_READ_TIMEOUT_S

    config = Config(
        connect_timeout=REGISTRY_CONNECT_TIMEOUT_S, read_timeout=REGISTRY_READ_TIMEOUT_S, retries={"total_max_attempts": 1}
    )
    try:
        client = botocore.session.get_session().create_client("dynamodb", config=config)
        return list(read_all_tasks(client, table_name).values())
    except Exception:  # botocore raises many unrelated types; any of them means "not known"
        return None


class ApiTarget:
    """A running API (`make local` or a deployed stage) at `base_url`, each exchange within the turn's
    deadline however the server trickles."""

    def __init__(self, base_url: str, api_key: str | None, turn_timeout_s: float = DEFAULT_TURN_TIMEOUT_S) -> None:
        if not has_http_scheme(base_url) or not _host_and_port(base_url):
            raise ValueError(f"--target {base_url!r}: give local or an http(s) URL, e.g. http://127.0.0.1:8080")
        self._base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", **({"x-api-key": api_key} if api_key else {})}
        self._turn_timeout_s = turn_timeout_s

    def tasks(self) -> list[Task] | None:
        try:
            answer = exchange("GET", f"{self._base_url}/tasks", None, self._headers, self._turn_timeout_s)
        except (OSError, http.client.HTTPException):
            return None
        return task_list(answer.body) if answer.status == 200 else None

    def route(self, turn: Turn, strategy: str | None) -> Outcome:
        started = time.perf_counter()
        body = request_body(turn, strategy).encode()
        try:
            answer = exchange("POST", f"{self._base_url}/route", body, self._headers, self._turn_timeout_s)
        except TimeoutError:
            return Outcome(0, _elapsed_ms(started), error=timed_out(self._turn_timeout_s))
        except AnswerTooLarge as error:
            return Outcome(error.status, _elapsed_ms(started), error=f"invalid_answer: {error}")
        except (OSError, http.client.HTTPException) as error:  # refused, reset, closed without an answer
            return Outcome(0, _elapsed_ms(started), error=f"transport: {type(error).__name__}")
        latency_ms = _elapsed_ms(started)
        if answer.status != 200:
            return Outcome(answer.status, latency_ms, error=error_code(answer.body))
        try:
            decision = route_answer(answer.body)
        except NotAnAnswer as error:
            return Outcome(200, latency_ms, error=str(error))
        by_primary = decision.backend == "sagemaker"  # then the decision is the primary's own answer
        return Outcome(
            200, latency_ms, decision.task, decision.event, decision.backend, decision.fallback_reason,
            confidence=decision.confidence, primary_task=decision.task if by_primary else None, primary_known=by_primary,
        )  # fmt: skip


def _host_and_port(url: str) -> bool:
    """Whether `url` names a host, and a port only if a number."""
    try:
        parts = urllib.parse.urlsplit(url)
        return bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        return False


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
