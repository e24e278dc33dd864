"""The default tasks' seeding (handlers/seed_tasks.py) against moto's DynamoDB: the resource's
creation writes every default task whose name never held one; an update or a delete writes nothing;
a task users edited or deleted is left as it is."""

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
    return event


def test_the_first_deploy_writes_every_default_task(seeding):
    handler, store = seeding
    assert handler.on_event(_event("Create")) == {
        "PhysicalResourceId": "default-tasks", "Data": {"Created": len(TASKS), "Kept": 0}
    }
    stored = {task.name: task for task in store.list()}
    assert sorted(stored) == sorted(task["name"] for task in TASKS)
    first = TASKS[0]
    assert stored[first["name"]].description == first["description"] and stored[first["name"]].version == 1


def test_updates_and_deletes_of_the_resource_write_nothing(seeding):
    handler, store = seeding
    for kind in ("Update", "Delete"):
        assert handler.on_event(_event(kind)) == {"PhysicalResourceId": "default-tasks"}
    assert store.list() == []


def test_a_task_users_changed_or_deleted_is_never_overwritten_nor_resurrected(seeding):
    handler, store = seeding
    edited, deleted = TASKS[0]["name"], TASKS[1]["name"]
    store.put(edited, TaskBody(description="our own wording", examples=[]), if_match=None)
    store.put(deleted, TaskBody(description="soon gone", examples=[]), if_match=None)
    store.delete(deleted, if_match=None)
    result = handler.on_event(_event("Create"))  # e.g. the construct added to a stage already in use
    assert result["Data"] == {"Created": len(TASKS) - 2, "Kept": 2}
    names = {task.name: task for task in store.list()}
    assert names[edited].description == "our own wording" and names[edited].version == 1
    assert deleted not in names
