"""The default tasks of a new stage (tasks/default_tasks.json), written into its registry by a custom
resource: in the stateless Api stack, so that the registry's stack holds its table alone."""

from __future__ import annotations

import json

from aws_cdk import CustomResource, Duration, RemovalPolicy, Stack, aws_dynamodb as dynamodb, aws_logs as logs, custom_resources as cr
from constructs import Construct

from infra.config import StageConfig
from infra.functions import bundled_function
from infra.nag import acknowledge
from taskrouter.core.task_spec import load_task_file
from taskrouter.repository import DEFAULT_TASKS_FILE


MAX_PROPERTIES_BYTES = 32 * 1024


class DefaultTasks(Construct):
    """Written into a registry that never held a task (handlers/seed_tasks.py), on the resource's
    creation (the stage's first deploy) or its table's replacement: a registry in use is never
    written, whatever later deploys, a rebuilt Api stack or a changed task file do."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, table: dynamodb.ITable) -> None:
        super().__init__(scope, construct_id)
        tasks = load_task_file(DEFAULT_TASKS_FILE, updated_at="")
        listed = [{"name": t.name, "description": t.description, "examples": list(t.examples)} for t in tasks]
        # CloudFormation sends the properties twice on an update (old and new) in one request to the
        # provider: keep them far under its limits, or the deploy fails with no clear error.
        if len(json.dumps(listed)) > MAX_PROPERTIES_BYTES:
            raise ValueError(f"{DEFAULT_TASKS_FILE.name}: over {MAX_PROPERTIES_BYTES} bytes of default tasks")
        function, role = bundled_function(
            self,
            stage,
            "Seed",
            description="TaskRouter: writes the default tasks into a new stage's registry (first deploy only)",
            handler="taskrouter.handlers.seed_tasks.on_event",
            memory_size=256,
            timeout=Duration.seconds(60),
            environment={"TASKROUTER_TABLE_NAME": table.table_name, "POWERTOOLS_SERVICE_NAME": "taskrouter-seed"},
        )
        table.grant(role, "dynamodb:Query", "dynamodb:UpdateItem")  # is it new? then the conditional writes
        provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=function,
            log_group=logs.LogGroup(self, "ProviderLogs", retention=stage.log_retention, removal_policy=RemovalPolicy.DESTROY),
        )
        self.resource = CustomResource(
            self,
            "Seeded",
            service_token=provider.service_token,
            resource_type="Custom::DefaultTasks",
            properties={
                "TableName": table.table_name,
                "Tasks": listed,
            },
        )
        stack = Stack.of(self)
        reason = ("CDK's Provider framework (custom_resources.Provider): its function runs only during a deploy, "
                  "and its grants are CDK's own: invoke the seeding function and write its logs")
        for finding in (
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "AwsSolutions-L1",
            f"AwsSolutions-IAM5[Resource::<{stack.get_logical_id(function.node.default_child)}.Arn>:*]",
        ):
            acknowledge(provider, finding, reason)
