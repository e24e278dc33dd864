"""Writes and consistent reads of the task registry (the `/tasks` API).

Versions are DynamoDB conditional writes: with `If-Match`, the write succeeds only while the
stored version is the expected one, so two writers holding the same version never both win.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from taskrouter.adapters.dynamodb_registry import read_all_tasks, task_from_item
from taskrouter.core.errors import NotFound, VersionConflict
from taskrouter.core.task_spec import TaskBody
from taskrouter.core.tasks import Task
from taskrouter.registry_schema import PARTITION_KEY, SORT_KEY, TASK_PARTITION


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DynamoDBTaskStore:
    def __init__(self, client: Any, table_name: str, clock: Callable[[], str] = utc_now) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock

    def list(self) -> list[Task]:
        return list(read_all_tasks(self._client, self._table, consistent=True).values())

    def get(self, name: str) -> Task | None:
        item = self._client.get_item(TableName=self._table, Key=_key(name), ConsistentRead=True).get("Item")
        return task_from_item(item) if item else None

    def put(self, name: str, body: TaskBody, *, if_match: int | None) -> tuple[Task, bool]:
        """The task as stored, and whether this write created it."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": _key(name),
            "UpdateExpression": (
                "SET #name = :name, description = :description, examples = :examples, "
                "updated_at = :updated_at, version = if_not_exists(version, :zero) + :one"
            ),
            "ExpressionAttributeNames": {"#name": "name"},  # a reserved word in DynamoDB
            "ExpressionAttributeValues": {
                ":name": {"S": name},
                ":description": {"S": body.description},
                ":examples": {"L": [{"S": example} for example in body.examples]},
                ":updated_at": {"S": self._clock()},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
            },
            "ReturnValues": "ALL_NEW",
        }
        if if_match is not None:
            request["ConditionExpression"] = "version = :expected"
            request["ExpressionAttributeValues"][":expected"] = {"N": str(if_match)}
        try:
            item = self._client.update_item(**request)["Attributes"]
        except ClientError as error:
            if _condition_failed(error):
                raise VersionConflict(f"If-Match: task {name} is not at version {if_match}") from None
            raise
        task = task_from_item(item)
        assert task is not None, "a task just written is a valid task"
        return task, task.version == 1

    def delete(self, name: str, *, if_match: int | None) -> None:
        request: dict[str, Any] = {"TableName": self._table, "Key": _key(name)}
        if if_match is None:
            request["ConditionExpression"] = "attribute_exists(#sk)"
            request["ExpressionAttributeNames"] = {"#sk": SORT_KEY}
        else:
            request["ConditionExpression"] = "version = :expected"
            request["ExpressionAttributeValues"] = {":expected": {"N": str(if_match)}}
        try:
            self._client.delete_item(**request)
        except ClientError as error:
            if not _condition_failed(error):
                raise
            if if_match is None or self.get(name) is None:
                raise NotFound(f"no task named {name}") from None
            raise VersionConflict(f"If-Match: task {name} is not at version {if_match}") from None


def _key(name: str) -> dict[str, Any]:
    return {PARTITION_KEY: {"S": TASK_PARTITION}, SORT_KEY: {"S": name}}


def _condition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
