"""The default tasks of a new stage (tasks/default_tasks.json), written into its registry by a custom
resource: in the stateless Api stack, so that the registry's stack holds its table alone."""

from __future__ import annotations

from aws_cdk import CustomResource, Duration, RemovalPolicy, Stack, aws_dynamodb as dynamodb, aws_logs as logs, custom_resources as cr
from constructs import Construct

from infra.config import StageConfig
from infra.functions import bundled_function
from infra.nag import acknowledge
from taskrouter.core.task_spec import load_task_file
from taskrouter.repository import DEFAULT_TASKS_FILE


class DefaultTasks(Construct):
    """Written when this resource is created, the stage's first deploy, and never again
    (handlers/seed_tasks.py acts on Create only): an update of the file or a later deploy changes
    nothing. Even on Create, a name that holds a task, or held one users deleted, is left as it is, so
    a rebuilt Api stack adds at most the default tasks that never existed."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, table: dynamodb.ITable) -> None:
        super().__init__(scope, construct_id)
        tasks = load_task_file(DEFAULT_TASKS_FILE, updated_at="")
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
        table.grant(role, "dynamodb:GetItem", "dynamodb:UpdateItem")
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
                "Tasks": [{"name": t.name, "description": t.description, "examples": list(t.examples)} for t in tasks],
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
