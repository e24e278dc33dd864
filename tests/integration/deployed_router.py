"""A deployed router as `taskrouter ops unseen` and the doctor read it (moto): its registry table
holding live tasks (and a deleted one's tombstone), its function published on the `live` alias with
the environment the stack gives it."""

from __future__ import annotations

import io
import json
import zipfile

import boto3

from taskrouter.adapters.dynamodb_task_store import DynamoDBTaskStore
from taskrouter.core.task_spec import TaskBody
from taskrouter.registry_schema import PARTITION_KEY, SORT_KEY

LIVE_TASKS = ("follow_up_email", "prepare_meeting_minutes", "book_a_demo", "renewal_reminder")


def deploy_router(stage: str, region: str, adapter_env: dict[str, str]) -> str:
    """The router function's name, its registry holding LIVE_TASKS."""
    table = f"taskrouter-{stage}-tasks"
    dynamodb = boto3.client("dynamodb", region_name=region)
    dynamodb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}, {"AttributeName": SORT_KEY, "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": PARTITION_KEY, "AttributeType": "S"}, {"AttributeName": SORT_KEY, "AttributeType": "S"}],
    )  # fmt: skip
    store = DynamoDBTaskStore(dynamodb, table)
    for name in (*LIVE_TASKS, "retired_task"):
        store.put(name, TaskBody(description=f"{name} description"), if_match=None)
    store.delete("retired_task", if_match=None)
    role = boto3.client("iam", region_name=region).create_role(
        RoleName=f"{stage}-live-router", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return None\n")
    function = f"{stage}-live-router"
    lambda_ = boto3.client("lambda", region_name=region)
    lambda_.create_function(
        FunctionName=function, Runtime="python3.13", Role=role, Handler="handler.handler", Code={"ZipFile": code.getvalue()},
        Environment={"Variables": {"TASKROUTER_TABLE_NAME": table, **adapter_env}}, Publish=True,
    )  # fmt: skip
    lambda_.create_alias(FunctionName=function, Name="live", FunctionVersion="1")
    return function
