"""Custom resource that gives a new stage the default tasks (infra/registry.py), called by CDK's
Provider framework. Only on the resource's creation, the stage's first deploy: an update or a delete
of the resource writes nothing. Even then, a name that holds a task, or held one that users deleted,
is left as it is (DynamoDBTaskStore.seed): seeding never overwrites the registry."""

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
    if event["RequestType"] != "Create":
        return {"PhysicalResourceId": event.get("PhysicalResourceId", PHYSICAL_ID)}
    props = event["ResourceProperties"]
    store = DynamoDBTaskStore(_client, props.get("TableName") or os.environ["TASKROUTER_TABLE_NAME"])
    created, kept = [], []
    for task in props["Tasks"]:
        body = TaskBody(description=task["description"], examples=list(task.get("examples", [])))
        (created if store.seed(task["name"], body) is not None else kept).append(task["name"])
    print(f"default tasks: created {created}, left as they were {kept}")  # names only, never their text
    return {"PhysicalResourceId": PHYSICAL_ID, "Data": {"Created": len(created), "Kept": len(kept)}}
