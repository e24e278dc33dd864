"""The task registry read from DynamoDB, cached in the container.

A copy lives `ttl_s` seconds (kept under the registry's 30-second promise, docs/api.md); when DynamoDB
fails, the last good copy is served rather than failing the decision, and DynamoDB is tried again
only after `retry_after_failure_s`, so an outage does not slow every request by a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from taskrouter.core.tasks import RegistryUnavailable, Task, check_task_name
from taskrouter.registry_schema import DELETED, PARTITION_KEY, SORT_KEY, TASK_PARTITION

logger = logging.getLogger(__name__)


class DynamoDBTaskSource:
    def __init__(
        self,
        client: Any,
        table_name: str,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        retry_after_failure_s: float = 5.0,
    ) -> None:
        self._client = client
        self._table = table_name
        self._ttl_s = ttl_s
        self._clock = clock
        self._retry_after_failure_s = retry_after_failure_s
        self._lock = threading.Lock()
        self._copy: dict[str, Task] | None = None
        self._fetched_at = float("-inf")

    def tasks(self) -> dict[str, Task]:
        with self._lock:
            if self._copy is not None and self._clock() - self._fetched_at < self._ttl_s:
                return self._copy
            try:
                self._copy = read_all_tasks(self._client, self._table)
                self._fetched_at = self._clock()
            except Exception as error:  # botocore raises many unrelated types; any of them means "no fresh copy"
                if self._copy is None:
                    raise RegistryUnavailable(type(error).__name__) from error
                self._fetched_at = self._clock() - self._ttl_s + self._retry_after_failure_s
                logger.warning("registry read failed, serving the last good copy", extra={"error": type(error).__name__})
            return self._copy


def read_all_tasks(client: Any, table_name: str, *, consistent: bool = False) -> dict[str, Task]:
    """Every task of the registry, by name in name order: one Query on the task partition, paged,
    without the tombstones of deleted tasks."""
    tasks: dict[str, Task] = {}
    request: dict[str, Any] = {
        "TableName": table_name,
        "KeyConditionExpression": "#pk = :pk",
        "FilterExpression": "attribute_not_exists(#deleted)",
        "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#deleted": DELETED},
        "ExpressionAttributeValues": {":pk": {"S": TASK_PARTITION}},
        "ConsistentRead": consistent,
    }
    while True:
        page = client.query(**request)
        for item in page.get("Items", []):
            task = task_from_item(item)
            if task is not None:
                tasks[task.name] = task
        if "LastEvaluatedKey" not in page:
            return tasks
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def task_to_item(task: Task) -> dict[str, Any]:
    """The DynamoDB item of a task (the inverse of `task_from_item`)."""
    return {
        PARTITION_KEY: {"S": TASK_PARTITION},
        SORT_KEY: {"S": task.name},
        "name": {"S": task.name},
        "description": {"S": task.description},
        "examples": {"L": [{"S": example} for example in task.examples]},
        "version": {"N": str(task.version)},
        "updated_at": {"S": task.updated_at},
    }


def task_from_item(item: dict[str, Any]) -> Task | None:
    """A Task from a DynamoDB item, or None (logged) for an item that is not a valid task."""
    try:
        return Task(
            name=check_task_name(item["name"]["S"]),
            description=item["description"]["S"],
            examples=tuple(entry["S"] for entry in item.get("examples", {}).get("L", [])),
            version=int(item.get("version", {}).get("N", "1")),
            updated_at=item.get("updated_at", {}).get("S", ""),
        )
    except (KeyError, TypeError, ValueError):
        logger.warning("skipping a malformed registry item", extra={"sk": str(item.get("sk", {}).get("S"))[:80]})
        return None
