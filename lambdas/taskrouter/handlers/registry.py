"""`/tasks` behind API Gateway: the task registry's management API (docs/api.md)."""

from __future__ import annotations

import functools
import re
from typing import Any

import botocore.session
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from botocore.config import Config
from pydantic import ValidationError

from taskrouter.adapters.dynamodb_task_store import DynamoDBTaskStore, WriteContention
from taskrouter.adapters.settings import DEFAULT_RETRY_AFTER_S, RuntimeSettings, catalogue_budget_from_env
from taskrouter.core.errors import ApiError, InvalidRequest, NotFound, RegistryUnavailableError
from taskrouter.core.request import decode_body
from taskrouter.core.task_spec import TaskBody
from taskrouter.core.tasks import Task, check_task_name
from taskrouter.core.validation import describe
from taskrouter.openapi import TaskOut

logger = Logger()
metrics = Metrics()
app = APIGatewayRestResolver()

_VERSION = re.compile(r'(?:W/)?"?([0-9]{1,18})"?')  # ASCII digits: \d would take any script's


@functools.cache
def task_store() -> DynamoDBTaskStore:
    """Built once per container. botocore may retry a call whose answer was lost: every write of the
    store is safe to repeat (a write already applied is seen as such on the next read).

    The function's timeout (20 s, infra/api.py) holds the worst case: a call is two tries of at most
    1 s to connect and 1 s to read, plus standard mode's back-off (under 1 s), so ~5 s; a write round
    is two calls, ~10 s; and a round starts only within the store's 8 s budget. A hung DynamoDB is
    then answered with the 503 it should be, never with API Gateway's own timeout."""
    client = botocore.session.get_session().create_client(
        "dynamodb",
        config=Config(connect_timeout=1, read_timeout=1, retries={"mode": "standard", "total_max_attempts": 2}),
    )
    return DynamoDBTaskStore(
        client, RuntimeSettings.table_name_from_env(), catalogue_budget=catalogue_budget_from_env()
    )


@app.get("/tasks")
def list_tasks() -> Response:
    return _json(200, {"tasks": [_task_json(task) for task in task_store().list()]})


@app.get("/tasks/<name>")
def get_task(name: str) -> Response:
    task = task_store().get(_name(name))
    if task is None:
        raise NotFound(f"no task named {name}")
    return _json(200, _task_json(task), {"ETag": f'"{task.version}"'})


@app.put("/tasks/<name>")
def put_task(name: str) -> Response:
    event = app.current_event
    try:
        body = TaskBody.model_validate_json(decode_body(event.body, is_base64=event.is_base64_encoded))
    except ValidationError as error:
        raise InvalidRequest(describe(error)) from None
    task, created = task_store().put(_name(name), body, if_match=_if_match(), if_none_match=_if_none_match())
    metrics.add_metric(name="TaskWritten", unit=MetricUnit.Count, value=1)
    logger.info("task written", extra={"task": task.name, "version": task.version, "new_task": created})
    return _json(201 if created else 200, _task_json(task), {"ETag": f'"{task.version}"'})


@app.delete("/tasks/<name>")
def delete_task(name: str) -> Response:
    task_store().delete(_name(name), if_match=_if_match())
    metrics.add_metric(name="TaskDeleted", unit=MetricUnit.Count, value=1)
    logger.info("task deleted", extra={"task": name})
    return Response(status_code=204, body="")


def _name(name: str) -> str:
    try:
        return check_task_name(name)
    except ValueError as error:
        raise InvalidRequest(f"name: {error}") from None


def _if_match() -> int | None:
    raw = app.current_event.headers.get("If-Match")  # Powertools' headers ignore case
    if raw is None:
        return None
    match = _VERSION.fullmatch(raw.strip())
    if match is None:
        raise InvalidRequest("If-Match: must be a task version (an integer)")
    return int(match.group(1))


def _if_none_match() -> bool:
    """`If-None-Match: *`: create only. A version list would mean nothing for a write."""
    raw = app.current_event.headers.get("If-None-Match")
    if raw is None:
        return False
    if raw.strip() != "*":
        raise InvalidRequest("If-None-Match: only * (create only) is supported")
    return True


def _task_json(task: Task) -> dict[str, Any]:
    return TaskOut(
        name=task.name,
        description=task.description,
        examples=list(task.examples),
        version=task.version,
        updated_at=task.updated_at,
    ).model_dump()


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


@app.exception_handler(ApiError)
def _refused(error: ApiError) -> Response:
    logger.info("refused", extra={"status": error.status, "code": error.code, "reason": error.message})
    return _json(error.status, error.body(), error.headers)


@app.exception_handler(WriteContention)
def _contended(error: WriteContention) -> Response:
    return _refused(RegistryUnavailableError(str(error), retry_after_s=DEFAULT_RETRY_AFTER_S))


@app.exception_handler(Exception)
def _unexpected(error: Exception) -> Response:
    # DynamoDB unreachable or throttling, or a bug: a retryable 503, counted to alarm on.
    logger.exception("unexpected failure")
    metrics.add_metric(name="UnexpectedError", unit=MetricUnit.Count, value=1)
    return _refused(RegistryUnavailableError("the task registry is unavailable", retry_after_s=DEFAULT_RETRY_AFTER_S))


@app.not_found
def _not_found(_: Exception) -> Response:
    return _refused(NotFound("no such resource"))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    return app.resolve(event, context)
