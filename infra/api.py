"""The public API: REST API Gateway with an API key; the router function behind `POST /route` and
the registry function behind `/tasks` (reads with the API key, writes with IAM).

API Gateway invokes each function through its alias `live`, on a published version: the router's
concurrency is reserved (both stages) and, in prod, provisioned on the alias, a fixed amount, since a
CodeDeploy canary weights the alias there (rolling back on this stack's deploy alarms); Application
Auto Scaling scales it only on an alias nothing weights."""

from __future__ import annotations

import json

from aws_cdk import (
    CfnOutput,
    Duration,
    RemovalPolicy,
    Stack,
    aws_apigateway as apigw,
    aws_cloudwatch as cloudwatch,
    aws_codedeploy as codedeploy,
    aws_dynamodb as dynamodb,
    aws_iam as iam,
    aws_lambda as lambda_,
    aws_logs as logs,
    aws_secretsmanager as secretsmanager,
    aws_ssm as ssm,
)
from constructs import Construct

from infra.capture import CaptureStack
from infra.config import StageConfig
from infra.default_tasks import DefaultTasks
from infra.functions import METRICS_NAMESPACE, bundled_function
from infra.runbook import runbook, slug
from infra.nag import acknowledge
from taskrouter.adapters.settings import DEFAULT_RETRY_AFTER_S, SERVING_MAX_TOKENS
from taskrouter.core.errors import ApiError, InvalidRequest, NoBackendAvailable, RequestTooLarge
from taskrouter.core.request import RouteRequest
from taskrouter.core.task_spec import TaskBody
from taskrouter.openapi import gateway_schema

API_STAGE_NAME = "v1"
# Powertools' service names and metrics namespace of the functions: their logs and custom metrics.
ROUTER_SERVICE = "taskrouter-router"
REGISTRY_SERVICE = "taskrouter-registry"
# The alias API Gateway invokes: the version that serves, moved by a deploy (CodeDeploy in prod).
LIVE_ALIAS = "live"


class ApiStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        table: dynamodb.ITable,
        openai_secret: secretsmanager.ISecret,
        ops_mode: ssm.IStringParameter,
        endpoint_arn: str,
        serving_max_tokens: int,
        capture: CaptureStack | None = None,
        router_adapter_tasks: list[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        retention = stage.log_retention
        # The endpoint's serving length: the router fits, and the registry bounds, the task catalogue
        # to the budget derived from it (taskrouter.core.catalogue).
        serving = {SERVING_MAX_TOKENS: str(serving_max_tokens)}

        self.router, router_role = self._function(
            stage,
            "Router",
            description="TaskRouter: POST /route (SageMaker first, OpenAI fallback)",
            handler="taskrouter.handlers.router.handler",
            # CPU scales with memory: 1769 MB is one full vCPU, for the cold start and the decision.
            memory_size=1769,
            timeout=Duration.seconds(stage.router_timeout_s),
            # a burst is throttled here, not by the account's pool or the OpenAI quota (stages.toml)
            reserved_concurrent_executions=stage.router_concurrency.reserved,
            environment={
                "TASKROUTER_TABLE_NAME": table.table_name,
                "TASKROUTER_SAGEMAKER_ENDPOINT": stage.endpoint_name,
                "TASKROUTER_SAGEMAKER_COMPONENT": stage.router_component_name,
                **stage.timeout_environment(),
                "TASKROUTER_OPENAI_MODEL": stage.openai_model,
                "TASKROUTER_OPENAI_SECRET_ARN": openai_secret.secret_arn,
                "TASKROUTER_DEFAULT_STRATEGY": stage.default_strategy.value,
                "TASKROUTER_HEDGE_AFTER_MS": str(stage.hedge_after_ms) if stage.hedge_after_ms is not None else "off",
                "TASKROUTER_OPS_MODE_PARAMETER": ops_mode.parameter_name,
                **serving,
                **_adapter_environment(stage, router_adapter_tasks),
                **_capture_environment(stage, capture),
                **stage.confidence.environment(),
                "POWERTOOLS_SERVICE_NAME": ROUTER_SERVICE,
            },
        )
        router_role.add_to_policy(
            iam.PolicyStatement(actions=["sagemaker:InvokeEndpoint"], resources=[endpoint_arn])
        )
        router_role.add_to_policy(
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[openai_secret.secret_arn])
        )
        router_role.add_to_policy(
            iam.PolicyStatement(actions=["ssm:GetParameter"], resources=[ops_mode.parameter_arn])
        )
        table.grant(router_role, "dynamodb:Query")  # the router lists tasks; it never reads one alone
        if capture is not None:  # sampled turns to the teacher (asynchronously), and the kill switch
            router_role.add_to_policy(
                iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[capture.teacher.function_arn])
            )
            router_role.add_to_policy(
                iam.PolicyStatement(actions=["ssm:GetParameter"], resources=[capture.switch.parameter_arn])
            )

        # The registry's writer: the table and nothing else.
        self.registry, registry_role = self._function(
            stage,
            "Registry",
            description="TaskRouter: /tasks, the task registry's management API",
            handler="taskrouter.handlers.registry.handler",
            memory_size=512,
            # the worst write against a hung DynamoDB ends in a 503 within it (handlers/registry.py)
            timeout=Duration.seconds(20),
            environment={
                "TASKROUTER_TABLE_NAME": table.table_name,
                **serving,
                "POWERTOOLS_SERVICE_NAME": REGISTRY_SERVICE,
            },
        )
        table.grant(registry_role, "dynamodb:Query", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
        DefaultTasks(self, "DefaultTasks", stage=stage, table=table)  # a new stage starts with them

        # Each function serves through its alias, on the version its code and configuration publish.
        concurrency = stage.router_concurrency
        self.router_alias = lambda_.Alias(
            self,
            "RouterLive",
            alias_name=LIVE_ALIAS,
            version=self.router.current_version,
            description="The router version POST /route invokes",
            # none in a stage that may cold start
            provisioned_concurrent_executions=concurrency.provisioned_min if concurrency.provisioned else None,
        )
        self._scale_provisioned_concurrency(stage)
        self.registry_alias = lambda_.Alias(
            self,
            "RegistryLive",
            alias_name=LIVE_ALIAS,
            version=self.registry.current_version,
            description="The registry version /tasks invokes",
        )
        if concurrency.canary != "off":
            self._deploy_by_canary(stage)

        access_logs = logs.LogGroup(self, "ApiAccessLogs", retention=retention, removal_policy=stage.removal_policy)
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"taskrouter-{stage.name}",
            description="TaskRouter: routes an assistant's chat to a task",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            # The role is account-wide (API Gateway's logging setting): deleting it with one stage
            # would stop the logs of every REST API in the account and region.
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=API_STAGE_NAME,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # a data trace would log conversations
                throttling_rate_limit=stage.api_rate_limit_rps,
                throttling_burst_limit=stage.api_burst_limit,
            ),
        )
        # API Gateway writes execution logs (errors only) to a group it would create unmanaged.
        execution_logs = logs.LogGroup(
            self,
            "ApiExecutionLogs",
            log_group_name=f"API-Gateway-Execution-Logs_{self.api.rest_api_id}/{API_STAGE_NAME}",
            retention=retention,
            removal_policy=stage.removal_policy,
        )
        self.api.deployment_stage.node.add_dependency(execution_logs)

        # API Gateway's own failures (a Lambda timeout or throttle, an oversized payload) in the
        # contract's error shape, not {"message": ...}.
        self.api.add_gateway_response(
            "Unavailable",
            type=apigw.ResponseType.DEFAULT_5_XX,
            status_code="503",
            response_headers={"Retry-After": f"'{DEFAULT_RETRY_AFTER_S}'"},
            templates={"application/json": _error_json(NoBackendAvailable("the router is unavailable", retry_after_s=0))},
        )
        self.api.add_gateway_response(
            "TooLarge",
            type=apigw.ResponseType.REQUEST_TOO_LARGE,
            status_code="413",
            templates={"application/json": _error_json(RequestTooLarge("body: over the size limit"))},
        )

        # Bodies are checked against the contract's models before any function runs; the functions
        # check them again (the rules a schema cannot say: the last message's role, the byte size).
        validator = self.api.add_request_validator(
            "BodyValidator", validate_request_body=True, validate_request_parameters=True
        )
        self.api.add_gateway_response(
            "InvalidBody",
            type=apigw.ResponseType.BAD_REQUEST_BODY,
            status_code="400",
            templates={
                "application/json": '{"error": {"code": "%s", '
                '"message": "body: $util.escapeJavaScript($context.error.validationErrorString)"}}' % InvalidRequest.code
            },
        )

        route = self.api.root.add_resource("route")
        route_post = route.add_method(
            "POST",
            apigw.LambdaIntegration(self.router_alias),
            api_key_required=True,
            request_validator=validator,
            request_models={"application/json": self._model("RouteRequest", RouteRequest)},
        )
        for finding in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
            acknowledge(
                route_post,
                finding,
                "/route callers are the assistant's servers, authenticated by API key and usage plan",
            )
        # /tasks: reads with the API key, writes signed with IAM credentials (SigV4).
        tasks = self.api.root.add_resource("tasks")
        task = tasks.add_resource("{name}")
        registry_integration = apigw.LambdaIntegration(self.registry_alias)
        reads = [
            tasks.add_method("GET", registry_integration, api_key_required=True),
            task.add_method("GET", registry_integration, api_key_required=True),
        ]
        writes = {
            "PUT": {"request_models": {"application/json": self._model("TaskBody", TaskBody)}},
            "DELETE": {},
        }
        for method, body in writes.items():
            write = task.add_method(
                method,
                registry_integration,
                authorization_type=apigw.AuthorizationType.IAM,
                request_validator=validator,
                **body,
            )
            acknowledge(
                write, "AwsSolutions-COG4", "writes are authorized by IAM (SigV4): AWS principals, not Cognito users"
            )
        for read in reads:
            for finding in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                acknowledge(read, finding, "/tasks reads take the same API key and usage plan as /route")
        acknowledge(
            self.api.deployment_stage,
            "AwsSolutions-APIG3",
            "AWS managed WAF rule groups block bodies over 8 KB, the contract allows 64 KiB; API keys, usage-plan "
            "and stage throttling bound abuse; an account-wide WebACL can still be attached by Firewall Manager",
        )
        acknowledge(
            self.api.node.find_child("CloudWatchRole"),
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-level logging role: AWS documents this managed policy for it",
        )

        api_key = self.api.add_api_key("ApiKey", api_key_name=f"taskrouter-{stage.name}")
        plan = self.api.add_usage_plan(
            "UsagePlan",
            name=f"taskrouter-{stage.name}",
            throttle=apigw.ThrottleSettings(rate_limit=stage.api_rate_limit_rps, burst_limit=stage.api_burst_limit),
        )
        plan.add_api_key(api_key)
        plan.add_api_stage(stage=self.api.deployment_stage)

        CfnOutput(self, "ApiUrl", value=self.api.url)
        CfnOutput(self, "ApiKeyId", value=api_key.key_id)
        # what `taskrouter ops unseen` and `doctor` read the serving adapter and the registry from
        CfnOutput(self, "RouterFunctionName", value=self.router.function_name)
        # the resource a writer's IAM policy names to be allowed PUT and DELETE on /tasks
        CfnOutput(self, "TasksWriteArn", value=self.api.arn_for_execute_api("*", "/tasks/*", API_STAGE_NAME))

    def _scale_provisioned_concurrency(self, stage: StageConfig) -> None:
        """Provisioned concurrency on the router's alias, scaled by Application Auto Scaling on its
        utilization only where no canary weights the alias.

        A CodeDeploy canary shifts traffic by the alias's weights (CodeDeploy User Guide, "Deployment
        configurations on an AWS Lambda compute platform"). Lambda lets an alias with provisioned
        concurrency take a routing configuration, "however, you can't manage provisioned concurrency
        settings on the alias while the routing configuration is in place" (Lambda Developer Guide,
        "Configuring provisioned concurrency"): Application Auto Scaling's changes to it ("AWS Lambda and
        Application Auto Scaling") would be refused during every canary, and for good on an alias a
        stopped deployment left weighted (docs/runbook.md, "Router alias left weighted"). So a canary
        stage keeps a fixed amount, the combination Lambda documents as working."""
        concurrency = stage.router_concurrency
        if not concurrency.provisioned:
            return
        if concurrency.canary != "off":  # fixed: provisioned_min equals provisioned_max (config.py)
            return
        self.router_alias.add_auto_scaling(
            min_capacity=concurrency.provisioned_min, max_capacity=concurrency.provisioned_max
        ).scale_on_utilization(utilization_target=concurrency.utilization_target)

    def _deploy_by_canary(self, stage: StageConfig) -> None:
        """A new version of each function takes a tenth of its alias's traffic first, then all of it;
        CodeDeploy moves the alias back if the deployment fails or is stopped, or if one of the
        function's deploy alarms fires meanwhile. The alarms live here, beside the aliases they
        protect, so that no stack depends on one that depends on it; they notify no one (the
        monitoring stack's alarms page), they gate deploys."""
        config = getattr(codedeploy.LambdaDeploymentConfig, f"CANARY_{stage.router_concurrency.canary.upper()}")
        application = codedeploy.LambdaApplication(
            self, "Deployments", application_name=f"taskrouter-{stage.name}"
        )
        unexpected_errors = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name="UnexpectedError",
            dimensions_map={"service": ROUTER_SERVICE},
            statistic="Sum",
            period=Duration.minutes(1),
        )
        gates = {
            "Router": (
                self.router_alias,
                [
                    self._deploy_alarm(
                        stage, "Router", "Errors", self.router_alias.metric_errors(period=Duration.minutes(1)),
                        "The router's live alias ended invocations in an unhandled error or a timeout.",
                        "Router deploy errors",
                    ),
                    self._deploy_alarm(
                        stage, "Router", "Throttles", self.router_alias.metric_throttles(period=Duration.minutes(1)),
                        "The router's live alias throttled invocations: its reserved concurrency was exhausted.",
                        "Router deploy throttles",
                    ),
                    self._deploy_alarm(
                        stage, "Router", "UnexpectedErrors", unexpected_errors,
                        "The router counted unexpected errors (a bug or bad configuration) in its decisions.",
                        "Router deploy unexpected errors",
                    ),
                ],
            ),
            "Registry": (
                self.registry_alias,
                [
                    self._deploy_alarm(
                        stage, "Registry", "Errors", self.registry_alias.metric_errors(period=Duration.minutes(1)),
                        "The registry's live alias ended invocations in an unhandled error or a timeout.",
                        "Registry deploy errors",
                    ),
                ],
            ),
        }
        for name, (alias, alarms) in gates.items():
            group = codedeploy.LambdaDeploymentGroup(
                self,
                f"{name}Deployment",
                application=application,
                deployment_group_name=f"taskrouter-{stage.name}-{name.lower()}",
                alias=alias,
                deployment_config=config,
                alarms=alarms,
                auto_rollback=codedeploy.AutoRollbackConfig(
                    failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
                ),
            )
            acknowledge(
                group.role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited]",
                "CodeDeploy's service role as CDK's LambdaDeploymentGroup makes it: AWSCodeDeployRoleForLambdaLimited, "
                "AWS's managed policy for Lambda deployments (get and update an alias, read its provisioned "
                "concurrency and the alarms, S3 objects under CodeDeploy/ and CodeDeployHook_* functions only); "
                "only codedeploy.amazonaws.com assumes it",
            )

    def _deploy_alarm(
        self, stage: StageConfig, function: str, name: str, metric: cloudwatch.IMetric, meaning: str, heading: str
    ) -> cloudwatch.Alarm:
        """Any count above 0 in a minute: a canary serves for minutes, one bad minute rolls it back.
        No data is no failure (a quiet canary is not a broken one)."""
        return cloudwatch.Alarm(
            self,
            f"{function}Deploy{name}",
            alarm_name=f"taskrouter-{stage.name}-{function}-Deploy-{name}",
            alarm_description=f"{meaning} A deployment in progress rolls back. Runbook: {runbook(slug(heading))}",
            metric=metric,
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _model(self, name: str, model: type) -> apigw.IModel:
        """An API Gateway model from the request model the function validates with."""
        schema = apigw.CfnModel(
            self, f"{name}Model", rest_api_id=self.api.rest_api_id, content_type="application/json",
            name=name, schema=gateway_schema(model),
        )
        return apigw.Model.from_model_name(self, f"{name}ModelRef", schema.ref)

    def _function(
        self, stage: StageConfig, construct_id: str, *, environment: dict[str, str], **props
    ) -> tuple[lambda_.Function, iam.Role]:
        return bundled_function(self, stage, construct_id, environment=environment, **props)


def _adapter_environment(stage: StageConfig, tasks: list[str] | None) -> dict[str, str]:
    """What the router serves: its adapter's name (`base`: the base model alone) and, for an adapter,
    the tasks it was trained on (check_deployable refuses a router adapter without them); a live task
    outside them is unseen (UnseenTasks, capture's unseen share). The base has no such list: no task is
    unseen for it (docs/capture.md)."""
    if stage.router_adapter is None:
        return {"TASKROUTER_ADAPTER_NAME": "base"}
    return {"TASKROUTER_ADAPTER_NAME": stage.router_adapter, "TASKROUTER_ADAPTER_TASKS": ",".join(tasks or [])}


def _capture_environment(stage: StageConfig, capture: CaptureStack | None) -> dict[str, str]:
    """The router's side of capture (docs/capture.md); none where the stage measures nothing (no
    TASKROUTER_CAPTURE_FUNCTION: capture off). Where no records are stored it draws the uniform sample
    alone (CaptureConfig.router_shares)."""
    if capture is None:
        return {}
    settings = stage.capture
    share, fallback_share, unseen_share = settings.router_shares()
    return {
        "TASKROUTER_CAPTURE_FUNCTION": capture.teacher.function_name,
        "TASKROUTER_CAPTURE_SHARE": str(share),
        "TASKROUTER_CAPTURE_FALLBACK_SHARE": str(fallback_share),
        "TASKROUTER_CAPTURE_UNSEEN_SHARE": str(unseen_share),
        "TASKROUTER_CAPTURE_REDACT": settings.redact_environment,
        "TASKROUTER_CAPTURE_SEND_TIMEOUT_MS": str(settings.send_timeout_ms),
        "TASKROUTER_CAPTURE_PARAMETER": capture.switch.parameter_name,
    }


def _error_json(error: ApiError) -> str:
    return json.dumps(error.body())
