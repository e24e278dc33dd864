"""Custom resource that gives a new stage the default tasks (infra/default_tasks.py), called by CDK's
Provider framework. A registry is seeded only while it has never held a task (not even a deleted
task's tombstone): on the stage's first deploy, or when its table was replaced by a new, empty one.
A registry in use is never written, whatever happens to this resource (added to a stage already in
use, its stack rebuilt, the task file changed): it belongs to its users."""

from __future__ import annotations

import os
from typing import Any

import botocore.session
from botocore.config import Config

from taskrouter.adapters.dynamodb_task_store import DynamoDBTaskStore
from taskrouter.core.task_spec import TaskBody

PHYSICAL_ID = "default-tasks"

_client = botocore.session.get_session().create_client(
    "dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 5})
)


def on_event(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    props = event["ResourceProperties"]
    table = props.get("TableName") or os.environ["TASKROUTER_TABLE_NAME"]
    kind = event["RequestType"]
    new_table = kind == "Update" and (event.get("OldResourceProperties") or {}).get("TableName") != table
    if kind != "Create" and not new_table:
        return {"PhysicalResourceId": event.get("PhysicalResourceId", PHYSICAL_ID)}
    store = DynamoDBTaskStore(_client, table)
    if not store.never_held_a_task():
        print("default tasks: the registry is in use; nothing written")
        return {"PhysicalResourceId": PHYSICAL_ID, "Data": {"Created": 0}}
    created = [task["name"] for task in props["Tasks"]
               if store.seed(task["name"], TaskBody(description=task["description"], examples=list(task.get("examples", []))))]
    print(f"default tasks: created {created}")  # names only, never their text
    return {"PhysicalResourceId": PHYSICAL_ID, "Data": {"Created": len(created)}}
