"""Writes and consistent reads of the task registry (the `/tasks` API, docs/api.md).

Every write is optimistic: read the item, decide, then write on the condition that the item is still
the one read (its version, or its absence), and start again if another writer got there first. So:
- a write whose content is already stored changes nothing (decided before any precondition), which
  makes every write safe to retry, by the caller after a 503 or by botocore after a lost answer;
- `If-Match` / `If-None-Match: *` are checked against the item read, and the write's condition makes
  sure nobody changed it since: of two writers holding the same version, exactly one wins;
- a deleted task leaves a tombstone holding its last version (its text removed), so a task created
  again continues above it and a version is never reused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from taskrouter.adapters.dynamodb_registry import read_all_tasks, task_from_item
from taskrouter.core.catalogue import CatalogueBudget, check_write
from taskrouter.core.errors import CatalogueTooLarge, NotFound, VersionConflict
from taskrouter.core.task_spec import TaskBody
from taskrouter.core.tasks import Task
from taskrouter.registry_schema import DELETED, PARTITION_KEY, SORT_KEY, TASK_PARTITION

# Rounds of read-then-conditional-write a request may lose to other writers before giving up; a new
# round starts only within `round_budget_s` of the request's start, so that a slow DynamoDB ends the
# request with a 503 inside its function's timeout rather than past it.
MAX_WRITE_ROUNDS = 8
DEFAULT_ROUND_BUDGET_S = 8.0


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WriteContention(Exception):
    """Other writers changed the task on every round: the caller may try again (a 503)."""


@dataclass(frozen=True)
class _Stored:
    """The item as one request read it: what its conditional write expects to find still."""

    exists: bool  # an item, live or tombstone
    deleted: bool  # a tombstone
    version: int  # its version (a tombstone's included); 0 when there is no item
    task: Task | None  # None: absent or deleted
    versioned: bool = True  # False: an item written by hand without a version (read as version 1)

    def condition(self) -> tuple[str, dict[str, Any]]:
        """A condition expression (and its values) that holds only while the item is still this one:
        the same version and the same side of a deletion, or still no item at all."""
        if not self.exists:
            return "attribute_not_exists(#sk)", {}
        deletion = "attribute_exists(#deleted)" if self.deleted else "attribute_not_exists(#deleted)"
        if not self.versioned:
            return f"attribute_not_exists(version) AND {deletion}", {}
        return f"version = :expected AND {deletion}", {":expected": {"N": str(self.version)}}


class DynamoDBTaskStore:
    def __init__(
        self,
        client: Any,
        table_name: str,
        clock: Callable[[], str] = utc_now,
        round_budget_s: float = DEFAULT_ROUND_BUDGET_S,
        timer: Callable[[], float] = time.monotonic,
        catalogue_budget: CatalogueBudget | None = None,
    ) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock
        self._round_budget_s = round_budget_s
        self._timer = timer
        self._catalogue_budget = catalogue_budget  # core.catalogue; None: unbounded

    def _rounds(self) -> Iterator[int]:
        """The rounds a write may take: at most MAX_WRITE_ROUNDS, each starting within the budget."""
        started = self._timer()
        for round_ in range(MAX_WRITE_ROUNDS):
            if round_ and self._timer() - started > self._round_budget_s:
                return
            yield round_

    def list(self) -> list[Task]:
        return list(read_all_tasks(self._client, self._table, consistent=True).values())

    def get(self, name: str) -> Task | None:
        return self._read(name).task

    def put(self, name: str, body: TaskBody, *, if_match: int | None, if_none_match: bool = False) -> tuple[Task, bool]:
        """The task as stored, and whether this write created it."""
        for _ in self._rounds():
            stored = self._read(name)
            live = stored.task
            if live is not None and (live.description, live.examples) == (body.description, tuple(body.examples)):
                return live, False  # already there: a retry of an applied write, or a no-op
            if if_none_match and live is not None:
                raise VersionConflict(f"If-None-Match: task {name} exists")
            if if_match is not None and (live is None or live.version != if_match):
                raise VersionConflict(f"If-Match: task {name} is not at version {if_match}")
            self._check_catalogue(name, body)
            try:
                return self._write(name, body, stored), live is None
            except _ItemChanged:
                continue
        raise WriteContention(f"task {name} kept changing under this write")

    def _check_catalogue(self, name: str, body: TaskBody) -> None:
        """Refuse a write that would take the catalogue past its budget. Two writers may each fit alone
        and not together: the router fits an over-budget registry at read time (core.catalogue)."""
        if self._catalogue_budget is None:
            return
        written = Task(name, body.description, tuple(body.examples))
        check = check_write(self.list(), [written], [], self._catalogue_budget)
        if check.refused:
            raise CatalogueTooLarge(check.message)

    def never_held_a_task(self) -> bool:
        """Whether the registry is new: no task, and no deleted task's tombstone either."""
        found = self._client.query(
            TableName=self._table,
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": PARTITION_KEY},
            ExpressionAttributeValues={":pk": {"S": TASK_PARTITION}},
            Limit=1,
            ConsistentRead=True,
        )
        return not found.get("Items")

    def seed(self, name: str, body: TaskBody) -> Task | None:
        """Create the task only where its name never held one (no item, not even a deleted task's
        tombstone): a default task never overwrites nor resurrects what users did. The task created,
        or None when the name was taken."""
        try:
            return self._write(name, body, _Stored(exists=False, deleted=False, version=0, task=None))
        except _ItemChanged:
            return None

    def delete(self, name: str, *, if_match: int | None) -> None:
        for _ in self._rounds():
            stored = self._read(name)
            if stored.task is None:
                raise NotFound(f"no task named {name}")
            if if_match is not None and stored.version != if_match:
                raise VersionConflict(f"If-Match: task {name} is not at version {if_match}")
            try:
                self._update(
                    name,
                    "SET #deleted = :true, updated_at = :updated_at REMOVE description, examples",
                    {":true": {"BOOL": True}, ":updated_at": {"S": self._clock()}},
                    stored,
                )
                return
            except _ItemChanged:
                continue
        raise WriteContention(f"task {name} kept changing under this delete")

    # -- DynamoDB ----------------------------------------------------------------------------------
    def _read(self, name: str) -> _Stored:
        item = self._client.get_item(TableName=self._table, Key=_key(name), ConsistentRead=True).get("Item")
        if item is None:
            return _Stored(exists=False, deleted=False, version=0, task=None)
        deleted = DELETED in item
        task = None if deleted else task_from_item(item)
        versioned = "version" in item
        version = int(item["version"]["N"]) if versioned else 1  # as task_from_item reads it
        return _Stored(exists=True, deleted=deleted, version=version, task=task, versioned=versioned)

    def _write(self, name: str, body: TaskBody, stored: _Stored) -> Task:
        item = self._update(
            name,
            "SET #name = :name, description = :description, examples = :examples, "
            "updated_at = :updated_at, version = :version REMOVE #deleted",
            {
                ":name": {"S": name},
                ":description": {"S": body.description},
                ":examples": {"L": [{"S": example} for example in body.examples]},
                ":updated_at": {"S": self._clock()},
                ":version": {"N": str(stored.version + 1)},  # above any tombstone's
            },
            stored,
        )
        task = task_from_item(item)
        assert task is not None, "a task just written is a valid task"
        return task

    def _update(self, name: str, expression: str, values: dict[str, Any], stored: _Stored) -> dict[str, Any]:
        """One UpdateItem, applied only if the item is still the one `stored` read."""
        names = {"#name": "name", "#deleted": DELETED, "#sk": SORT_KEY}  # `name` is a reserved word in DynamoDB
        condition, expected = stored.condition()
        values = {**values, **expected}
        try:
            return self._client.update_item(
                TableName=self._table,
                Key=_key(name),
                UpdateExpression=expression,
                ConditionExpression=condition,
                # DynamoDB refuses a name the expressions do not use
                ExpressionAttributeNames={key: value for key, value in names.items() if key in expression + condition},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise _ItemChanged from None
            raise


class _ItemChanged(Exception):
    """Another writer changed the item between this request's read and its write."""


def _key(name: str) -> dict[str, Any]:
    return {PARTITION_KEY: {"S": TASK_PARTITION}, SORT_KEY: {"S": name}}
