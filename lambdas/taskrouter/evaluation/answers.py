"""What a target answers, read strictly: a `POST /route` 200 that is not the API's answer shape (HTML
from a proxy, a task that is a list or a number, an event not among the five) is no decision, so that
it can never be scored as one."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from taskrouter.core.backends import BackendName, FallbackReason
from taskrouter.core.events import Event
from taskrouter.core.tasks import Task, check_task_name
from taskrouter.core.validation import describe


class RouteAnswer(BaseModel):
    """The fields of a `POST /route` 200 that an evaluation scores; others (latency_ms, request_id,
    ignored_tasks) are the API's business."""

    model_config = ConfigDict(strict=True, frozen=True)

    task: Annotated[str, AfterValidator(check_task_name)] | None  # a registry name; no task is null
    event: Event
    backend: BackendName
    fallback_reason: FallbackReason | None
    # The primary's answer probability whenever it answered (escalated or not), null when it gave none:
    # required, so that an API that dropped it is not read as "no confidence".
    confidence: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None


class NotAnAnswer(ValueError):
    """A 200 whose body is not the API's answer; the message names the field, never the body."""


def route_answer(body: bytes) -> RouteAnswer:
    try:
        return RouteAnswer.model_validate_json(body)
    except ValidationError as error:
        raise NotAnAnswer(f"invalid_answer: {describe(error)}") from None


def error_code(body: bytes) -> str:
    """The code of an error answer in the API's error shape; `http_error` for any other body."""
    try:
        payload = json.loads(body)
        code = payload["error"]["code"]
    except (ValueError, TypeError, KeyError):
        return "http_error"
    return code if isinstance(code, str) else "http_error"


def task_list(body: bytes) -> list[Task] | None:
    """The tasks of a `GET /tasks` answer; None when it is not one."""
    try:
        payload: Any = json.loads(body)
        return [Task(t["name"], t["description"], tuple(t.get("examples") or ())) for t in payload["tasks"]]
    except (ValueError, TypeError, KeyError):
        return None
