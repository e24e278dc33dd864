"""A function of the shared bundle, as every TaskRouter function is made: its own role, log group
(stage retention), JSON logs and X-Ray tracing; the role may write its logs and nothing else until
the caller grants more."""

from __future__ import annotations

from aws_cdk import aws_iam as iam, aws_lambda as lambda_, aws_logs as logs
from constructs import Construct

from infra.config import StageConfig
from infra.lambda_code import ARCHITECTURE, LAMBDA_RUNTIME_REASON, RUNTIME, function_code
from infra.nag import acknowledge

METRICS_NAMESPACE = "TaskRouter"  # Powertools' metrics namespace of every function


def bundled_function(
    scope: Construct, stage: StageConfig, construct_id: str, *, environment: dict[str, str], traced: bool = True, **props
) -> tuple[lambda_.Function, iam.Role]:
    """`traced`: X-Ray active tracing, whose two actions have no resource-level form (a role that must
    name every resource it touches goes without)."""
    log_group = logs.LogGroup(
        scope, f"{construct_id}Logs", retention=stage.log_retention, removal_policy=stage.removal_policy
    )
    role = iam.Role(
        scope,
        f"{construct_id}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"TaskRouter {stage.name}: {construct_id.lower()} function",
    )
    role.add_to_policy(
        iam.PolicyStatement(actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group.log_group_arn])
    )
    function = lambda_.Function(
        scope,
        construct_id,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        code=function_code(),
        role=role,
        tracing=lambda_.Tracing.ACTIVE if traced else lambda_.Tracing.DISABLED,
        log_group=log_group,
        logging_format=lambda_.LoggingFormat.JSON,
        environment={"POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE, **environment},
        **props,
    )
    if traced:
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments/PutTelemetryRecords (added by active tracing) have no resource-level form",
        )
    acknowledge(
        function,
        "AwsSolutions-L1",
        LAMBDA_RUNTIME_REASON,
    )
    return function, role
