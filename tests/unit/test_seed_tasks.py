"""The default tasks' seeding (handlers/seed_tasks.py) against moto's DynamoDB: a registry that never
held a task gets every default task when the resource is created (or its table replaced); a registry
in use, an update or a delete get nothing."""

from __future__ import annotations

import importlib
import json

import pytest

from taskrouter.adapters.dynamodb_task_store import DynamoDBTaskStore
from taskrouter.core.task_spec import TaskBody
from taskrouter.repository import DEFAULT_TASKS_FILE

TASKS = json.loads(DEFAULT_TASKS_FILE.read_text())["tasks"]


@pytest.fixture
def seeding(tasks_table, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from taskrouter.handlers import seed_tasks

    module = importlib.reload(seed_tasks)  # its client is made at import, as in Lambda's init
    yield module, DynamoDBTaskStore(tasks_table, "tasks")


def _event(kind: str) -> dict:
    event = {"RequestType": kind, "ResourceProperties": {"TableName": "tasks", "Tasks": TASKS}}
    if kind != "Create":
        event["PhysicalResourceId"] = "default-tasks"
    if kind == "Update":  # CloudFormation sends the properties before the update too
        event["OldResourceProperties"] = dict(event["ResourceProperties"])
    return event


def test_the_first_deploy_writes_every_default_task(seeding):
    handler, store = seeding
    assert handler.on_event(_event("Create")) == {"PhysicalResourceId": "default-tasks", "Data": {"Created": len(TASKS)}}
    stored = {task.name: task for task in store.list()}
    assert sorted(stored) == sorted(task["name"] for task in TASKS)
    first = TASKS[0]
    assert stored[first["name"]].description == first["description"] and stored[first["name"]].version == 1


def test_updates_and_deletes_of_the_resource_write_nothing(seeding):
    handler, store = seeding
    for kind in ("Update", "Delete"):
        assert handler.on_event(_event(kind)) == {"PhysicalResourceId": "default-tasks"}
    assert store.list() == []


@pytest.mark.parametrize("used", ["edited", "deleted"])
def test_a_registry_in_use_is_never_written(seeding, used):
    """The construct added to a stage already in use, or its stack rebuilt: a registry that holds a
    task, or held one and had it deleted (its tombstone), is its users'."""
    handler, store = seeding
    name = TASKS[0]["name"]
    store.put(name, TaskBody(description="our own wording", examples=[]), if_match=None)
    if used == "deleted":
        store.delete(name, if_match=None)
    assert handler.on_event(_event("Create"))["Data"] == {"Created": 0}
    tasks = store.list()
    assert [(t.name, t.description) for t in tasks] == ([] if used == "deleted" else [(name, "our own wording")])


def test_a_replaced_empty_table_is_seeded(seeding):
    handler, store = seeding
    event = {**_event("Update"), "OldResourceProperties": {"TableName": "the-old-table", "Tasks": TASKS}}
    assert handler.on_event(event)["Data"] == {"Created": len(TASKS)}
    assert len(store.list()) == len(TASKS)
