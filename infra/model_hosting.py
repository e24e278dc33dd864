"""The primary backend: a SageMaker endpoint serving the base LLM from AWS's LMI container, with each
configured LoRA adapter hosted on it as an adapter inference component (their archives shipped by
`model_artifacts.py`)."""

from __future__ import annotations

from aws_cdk import (
    ArnFormat,
    CfnOutput,
    Duration,
    RemovalPolicy,
    Stack,
    aws_applicationautoscaling as autoscaling,
    aws_cloudwatch as cloudwatch,
    aws_iam as iam,
    aws_kms as kms,
    aws_logs as logs,
    aws_sagemaker as sagemaker,
)
from aws_cdk.region_info import FactName
from constructs import Construct

from infra.config import AdapterManifest, ServingSettings, StageConfig
from infra.model_artifacts import AdapterArchive, ModelArtifactsStack, artifact_bucket_name
from infra.nag import acknowledge, as_nag_shows
from infra.runbook import runbook

VARIANT_NAME = "AllTraffic"
ENDPOINT_LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
COMPONENT_LOG_GROUP_PREFIX = "/aws/sagemaker/InferenceComponents/"


def _pascal(name: str) -> str:
    """`sales-router-v2` as `SalesRouterV2`, for construct ids."""
    return "".join(part.capitalize() for part in name.split("-"))


def dlc_image_uri(stack: Stack, repository: str, tag: str) -> str:
    """An image of AWS's Deep Learning Containers registry, right for the stack's region.

    The registry account is a regional fact known to the CDK: no network, no credentials.
    """
    domain = stack.regional_fact(FactName.DOMAIN_SUFFIX)
    return f"{dlc_account(stack)}.dkr.ecr.{stack.region}.{domain}/{repository}:{tag}"


def dlc_account(stack: Stack) -> str:
    """AWS's Deep Learning Containers registry account for the stack's region."""
    return stack.regional_fact(FactName.DLC_REPOSITORY_ACCOUNT)


class ModelHostingStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        serving: ServingSettings,
        manifests: list[AdapterManifest],
        artifacts: ModelArtifactsStack,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # The base's weights are staged and the archives shipped by that stack's deploy: it goes first.
        self.add_stack_dependency(artifacts)
        archives: dict[str, AdapterArchive] = artifacts.adapter_archives
        self.endpoint_name = stage.endpoint_name
        base_component_name = stage.base_component_name
        self.component_names = [base_component_name, *(stage.adapter_component_name(m.name) for m in manifests)]

        # Where the endpoint's and each component's containers log, owned here for their retention. The
        # groups have fixed names in a stateless stack, so nothing may ever create them but this stack: never
        # retained (a rolled-back first deploy would leave them behind), no logs:CreateLogGroup for SageMaker
        # (the role below), and each writer depends on its group, which CloudFormation therefore creates
        # before it and deletes after it (a stack's resources are deleted in reverse dependency order).
        # Otherwise a delete or a rollback removes a group while its endpoint still runs, SageMaker creates it
        # again, and the next deploy fails on a group that "already exists".
        def owned_log_group(construct_id: str, name: str) -> logs.LogGroup:
            return logs.LogGroup(
                self, construct_id, log_group_name=name, retention=stage.log_retention, removal_policy=RemovalPolicy.DESTROY
            )

        endpoint_logs = owned_log_group("EndpointLogs", f"{ENDPOINT_LOG_GROUP_PREFIX}{self.endpoint_name}")
        component_logs = {
            name: owned_log_group(construct_id, f"{COMPONENT_LOG_GROUP_PREFIX}{name}")
            for name, construct_id in (
                (base_component_name, "BaseComponentLogs"),
                *((stage.adapter_component_name(m.name), f"AdapterComponentLogs{_pascal(m.name)}") for m in manifests),
            )
        }
        role = self._execution_role(serving, stage, [archive.object_arn for archive in archives.values()], endpoint_logs)
        # The base's weights and the adapters: objects of the artifact bucket, under its key.
        weights = f"arn:{self.partition}:s3:::{artifact_bucket_name(stage, self)}/{artifacts.base_weights.prefix}*"
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[weights]))
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{as_nag_shows(self, weights)}]",
                    "the base model's files: every object of its one pinned revision's folder, SageMaker reads them all")
        role.add_to_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[artifacts.bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [artifacts.base_weights.prefix + "*"]}},
        ))
        artifacts.key.grant_decrypt(role)

        image = dlc_image_uri(self, serving.image_repository, stage.lmi_image_tag)
        model = sagemaker.CfnModel(
            self,
            "BaseModel",
            execution_role_arn=role.role_arn,
            enable_network_isolation=stage.network_isolation,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image,
                # The weights staged at the pinned revision (base_weights.py), copied as they are into
                # /opt/ml/model, LMI's model store (djl-serving serving/docker/config.properties); with
                # no HF_MODEL_ID, LMI serves the model it finds there (ModelStore.initialize).
                model_data_source=sagemaker.CfnModel.ModelDataSourceProperty(
                    s3_data_source=sagemaker.CfnModel.S3DataSourceProperty(
                        s3_uri=artifacts.base_weights.s3_uri, s3_data_type="S3Prefix", compression_type="None"
                    )
                ),
                environment={
                    "HF_HUB_OFFLINE": "1",  # nothing is fetched from the hub at run time, isolated or not
                    "OPTION_TENSOR_PARALLEL_DEGREE": str(serving.accelerators_per_copy),
                    "OPTION_MAX_LORA_RANK": str(serving.max_lora_rank),
                    **serving.options,
                },
            ),
        )
        model.node.add_dependency(role)

        self.volume_key: kms.Key | None = None
        if stage.volume_kms_supported:
            self.volume_key = kms.Key(
                self,
                "VolumeKey",
                description=f"TaskRouter {stage.name}: SageMaker endpoint storage volumes",
                enable_key_rotation=True,
                removal_policy=stage.removal_policy,
            )
            self.volume_key.grant(
                role,
                "kms:CreateGrant",
                "kms:Decrypt",
                "kms:DescribeKey",
                "kms:GenerateDataKey",
                "kms:GenerateDataKeyWithoutPlaintext",
            )

        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            execution_role_arn=role.role_arn,
            # Every container of the endpoint (the base and its adapters' components): no network in or
            # out; SageMaker itself fetches the weights and archives from S3 beforehand.
            enable_network_isolation=stage.network_isolation,
            # Instance types with local NVMe storage encrypt it in hardware and refuse a KmsKeyId.
            kms_key_id=self.volume_key.key_arn if self.volume_key else None,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT_NAME,
                    instance_type=stage.gpu_instance_type,
                    initial_instance_count=stage.gpu_instance_count,
                    # Instances follow the copies the components need (a minimum of 0: none when idle).
                    # One more than the copies at most: a rolling update starts its new copy beside them.
                    managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                        status="ENABLED",
                        min_instance_count=stage.scaling.min_copies,
                        max_instance_count=stage.scaling.max_copies + 1,
                    ),
                    routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                        routing_strategy="LEAST_OUTSTANDING_REQUESTS"
                    ),
                    model_data_download_timeout_in_seconds=serving.model_data_download_timeout_s,
                    container_startup_health_check_timeout_in_seconds=serving.container_startup_health_check_timeout_s,
                )
            ],
        )
        endpoint_config.node.add_dependency(role)
        endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=endpoint_config.attr_endpoint_config_name,
        )
        endpoint.node.add_dependency(endpoint_logs)

        base = sagemaker.CfnInferenceComponent(
            self,
            "BaseComponent",
            inference_component_name=base_component_name,
            endpoint_name=endpoint.attr_endpoint_name,
            variant_name=VARIANT_NAME,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                model_name=model.attr_model_name,
                compute_resource_requirements=sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
                    number_of_accelerator_devices_required=serving.accelerators_per_copy,
                    min_memory_required_in_mb=serving.min_memory_mb,
                ),
                startup_parameters=sagemaker.CfnInferenceComponent.InferenceComponentStartupParametersProperty(
                    model_data_download_timeout_in_seconds=serving.model_data_download_timeout_s,
                    container_startup_health_check_timeout_in_seconds=serving.container_startup_health_check_timeout_s,
                ),
            ),
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(
                copy_count=stage.gpu_instance_count
            ),
            deployment_config=self._rolling_update(base_component_name, stage),
        )
        base.node.add_dependency(component_logs[base_component_name])
        self._scale(base, base_component_name, self.component_names, stage)
        # Each adapter shares the base component's GPUs: no compute of its own, only its weights.
        for manifest in manifests:
            archive = archives[manifest.name]
            adapter = sagemaker.CfnInferenceComponent(
                self,
                f"AdapterComponent{_pascal(manifest.name)}",
                inference_component_name=stage.adapter_component_name(manifest.name),
                endpoint_name=endpoint.attr_endpoint_name,
                specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                    base_inference_component_name=base_component_name,
                    container=sagemaker.CfnInferenceComponent.InferenceComponentContainerSpecificationProperty(
                        artifact_url=archive.url
                    ),
                ),
            )
            adapter.add_resource_dependency(base)
            adapter.node.add_dependency(component_logs[stage.adapter_component_name(manifest.name)])
            if archive.upload is not None:
                adapter.node.add_dependency(archive.upload)  # in the bucket before SageMaker reads it

        self.endpoint_arn = Stack.of(self).format_arn(
            service="sagemaker", resource="endpoint", resource_name=self.endpoint_name
        )
        CfnOutput(self, "EndpointName", value=endpoint.attr_endpoint_name)
        CfnOutput(self, "RouterComponentName", value=stage.router_component_name)

    def _rolling_update(
        self, component: str, stage: StageConfig
    ) -> sagemaker.CfnInferenceComponent.InferenceComponentDeploymentConfigProperty | None:
        """A changed base (model, image, settings) replaces one copy at a time, the others serving, and
        rolls back by itself when the component's own alarms fire. Those alarms live here, beside the
        resource they protect, so that no stack depends on one that depends on it.

        Only where at least two copies serve (prod): SageMaker takes a batch of 5 to 50 % of the
        copies, and with fewer than two no update can keep a copy serving anyway (dev: replaced)."""
        if stage.scaling.min_copies < 2:
            return None
        dimensions = {"InferenceComponentName": component}
        model_errors = cloudwatch.MathExpression(
            expression="FILL(errors, 0) + FILL(faults, 0)",
            using_metrics={
                name: cloudwatch.Metric(namespace="AWS/SageMaker", metric_name=metric, dimensions_map=dimensions,
                                        statistic="Sum", period=Duration.minutes(1))
                for name, metric in (("errors", "InvocationModelErrors"), ("faults", "Invocation5XXErrors"))
            },
            period=Duration.minutes(1),
        )
        slowest_primary_us = max(b.primary_timeout_ms for b in stage.budgets.values()) * 1000
        latency = cloudwatch.Metric(namespace="AWS/SageMaker", metric_name="ModelLatency", dimensions_map=dimensions,
                                    statistic="p90", period=Duration.minutes(1))
        alarms = [
            # One datapoint: SageMaker's metrics come a minute or two late, and a batch is watched 10 minutes.
            cloudwatch.Alarm(self, "RollbackOnModelErrors", metric=model_errors, threshold=0, evaluation_periods=1,
                             comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                             treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                             alarm_description=f"The base component answers errors: a rolling update rolls back. Runbook: {runbook('rolling-update-rollback')}"),
            cloudwatch.Alarm(self, "RollbackOnModelLatency", metric=latency, threshold=slowest_primary_us,
                             evaluation_periods=1,
                             comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                             treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                             alarm_description=f"The base component is slower than every primary deadline: a rolling update rolls back. Runbook: {runbook('rolling-update-rollback')}"),
        ]
        one_copy = sagemaker.CfnInferenceComponent.InferenceComponentCapacitySizeProperty(type="COPY_COUNT", value=1)
        return sagemaker.CfnInferenceComponent.InferenceComponentDeploymentConfigProperty(
            rolling_update_policy=sagemaker.CfnInferenceComponent.InferenceComponentRollingUpdatePolicyProperty(
                maximum_batch_size=one_copy,
                rollback_maximum_batch_size=one_copy,
                wait_interval_in_seconds=600,  # a batch serves this long, watched, before the next
                maximum_execution_timeout_in_seconds=3600,
            ),
            auto_rollback_configuration=sagemaker.CfnInferenceComponent.AutoRollbackConfigurationProperty(
                alarms=[sagemaker.CfnInferenceComponent.AlarmProperty(alarm_name=alarm.alarm_name) for alarm in alarms]
            ),
        )

    def _scale(
        self, base: sagemaker.CfnInferenceComponent, component: str, components: list[str], stage: StageConfig
    ) -> None:
        """Copies of the base on invocations per copy, within the stage's bounds; from zero to exactly one,
        on the first request that found no copy (SageMaker's NoCapacityInvocationFailures, on any component:
        AWS does not say whether an adapter's refusals count under its name or its base's).

        Target tracking sees the base component's own invocations: an adapter's are not documented to
        count there, so a stage whose router invokes an adapter should check on its first deploy that
        the base's InvocationsPerCopy moves (the adapters share the base's copies)."""
        role = self.format_arn(
            service="iam", region="", resource="role",
            resource_name="aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
            "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
        )
        target = autoscaling.CfnScalableTarget(
            self,
            "BaseCopies",
            service_namespace="sagemaker",
            scalable_dimension="sagemaker:inference-component:DesiredCopyCount",
            resource_id=f"inference-component/{component}",  # by name: Ref gives the ARN
            min_capacity=stage.scaling.min_copies,
            max_capacity=stage.scaling.max_copies,
            role_arn=role,
        )
        target.node.add_dependency(base)
        autoscaling.CfnScalingPolicy(
            self,
            "BaseCopiesOnInvocations",
            policy_name=f"{component}-invocations-per-copy",
            policy_type="TargetTrackingScaling",
            scaling_target_id=target.ref,
            target_tracking_scaling_policy_configuration=autoscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=stage.scaling.invocations_per_copy,
                predefined_metric_specification=autoscaling.CfnScalingPolicy.PredefinedMetricSpecificationProperty(
                    predefined_metric_type="SageMakerInferenceComponentInvocationsPerCopy"
                ),
                scale_in_cooldown=300,
                scale_out_cooldown=60,
            ),
        )
        if stage.scaling.min_copies > 0:
            return
        # Waking sets the base to exactly one copy, however often it is asked to. The alarms below invoke the
        # policy again every minute they stay in ALARM (CloudWatch User Guide, "Alarm actions": only Auto
        # Scaling actions repeat while the state lasts), and they stay there for the minutes a copy takes to
        # start, requests still failing meanwhile. The guide's own policy (ChangeInCapacity +1, cooldown 60 s)
        # adds a copy at each invocation once its cooldown has passed (Application Auto Scaling User Guide,
        # "Step scaling policies": adjustment types, cooldown period): a second GPU a minute into the first's
        # start. ExactCapacity changes the capacity "to the specified value" (same page): 1, each time.
        #
        # ExactCapacity would also lower a base that has more copies, and target tracking does not stop a step
        # policy's scale-in (same guide, "Target tracking scaling policies": considerations). It never gets
        # the chance: the alarms watch NoCapacityInvocationFailures alone, which SageMaker counts only for a
        # request that found no copy to serve it (scale-to-zero guide below; an adapter's copies are its
        # base's), so they fire only while the base serves nothing. Target tracking cannot have added copies
        # then: its metric is invocations per copy, with no copy to count on. What is left is a base whose
        # every copy was lost at once, its desired count set back to 1 while none serves; target tracking
        # raises it again on load. A stage that never goes to zero (min_copies > 0: prod) has no wake at all.
        wake = autoscaling.CfnScalingPolicy(
            self,
            "BaseCopiesFromZero",
            policy_name=f"{component}-from-zero",
            policy_type="StepScaling",
            scaling_target_id=target.ref,
            step_scaling_policy_configuration=autoscaling.CfnScalingPolicy.StepScalingPolicyConfigurationProperty(
                adjustment_type="ExactCapacity",
                metric_aggregation_type="Maximum",
                cooldown=60,
                step_adjustments=[autoscaling.CfnScalingPolicy.StepAdjustmentProperty(
                    metric_interval_lower_bound=0, scaling_adjustment=1
                )],
            ),
        )
        # AWS's scale-to-zero guide (SageMaker Developer Guide, "Scale an endpoint to zero instances", "To
        # enable an endpoint to scale out from zero instances"): one alarm on NoCapacityInvocationFailures of a
        # component ("when an endpoint receives an inference request, but the endpoint has no active instances
        # to serve the request"), Sum over 60 s, threshold 1, one datapoint, acting on the step policy. A
        # standard-resolution metric has no 30 s datapoints to alarm on. At or above 1 rather than the guide's
        # "greater than": the first refused request wakes the base, not the second. One such alarm per
        # component (AWS does not say whether an adapter's refusals count under its name or its base's), each
        # waking the base: with an exact capacity, two alarms firing together still make one copy.
        for name in components:
            no_copy = cloudwatch.Alarm(
                self,
                f"WakeOn{_pascal(name.removeprefix(f'taskrouter-{stage.name}-'))}",
                alarm_description=f"A request to {name} found no copy of the base: start one (scale from zero). "
                f"Runbook: {runbook('base-has-no-copy')}",
                metric=cloudwatch.Metric(
                    namespace="AWS/SageMaker", metric_name="NoCapacityInvocationFailures",
                    dimensions_map={"InferenceComponentName": name}, statistic="Sum", period=Duration.minutes(1),
                ),
                evaluation_periods=1,
                datapoints_to_alarm=1,
                threshold=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            no_copy.node.default_child.add_property_override("AlarmActions", [wake.ref])

    def _execution_role(
        self,
        serving: ServingSettings,
        stage: StageConfig,
        archive_arns: list[str],
        endpoint_logs: logs.LogGroup,
    ) -> iam.Role:
        role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"TaskRouter {stage.name}: SageMaker endpoint of the routing model",
        )
        # The image lives in AWS's DLC registry account, not in this account.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[
                    self.format_arn(
                        service="ecr", account=dlc_account(self), resource="repository", resource_name=serving.image_repository
                    )
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"])  # no resource-level form
        )
        if archive_arns:  # each adapter's one object, nothing else
            role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=archive_arns))
        # Where SageMaker writes the containers' output. AWS's table of its log groups (SageMaker Developer
        # Guide, "Log groups and streams that Amazon SageMaker AI sends to Amazon CloudWatch Logs") names the
        # endpoint's, /aws/sagemaker/Endpoints/[EndpointName], and none for inference components, whose
        # containers log to /aws/sagemaker/InferenceComponents/<component name> in AWS's own examples (the
        # namespace of their metrics too). AWS's execution-role policy ("CreateModel API: Execution Role
        # Permissions") grants logs:CreateLogGroup besides these on "*": here no group may be created, the
        # stack owns them all (above); streams are written in the endpoint's group and in this stage's
        # component groups, by their names' prefix (stage names take no hyphen).
        component_logs = self.format_arn(
            service="logs", resource="log-group", arn_format=ArnFormat.COLON_RESOURCE_NAME,
            resource_name=f"{COMPONENT_LOG_GROUP_PREFIX}{stage.endpoint_name}-*",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[endpoint_logs.log_group_arn, component_logs],
            )
        )
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{as_nag_shows(self, component_logs)}]",
                    "the log groups of this stage's inference components, /aws/sagemaker/InferenceComponents/"
                    "<component>, each owned by the stack: streams only, no group can be created")
        # Instance and container metrics (GPU, memory) of the endpoint and its components.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={
                    "StringEquals": {
                        "cloudwatch:namespace": ["/aws/sagemaker/Endpoints", "/aws/sagemaker/InferenceComponents"]
                    }
                },
            )
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no resource-level form: image pulls are "
            "limited to the one DLC repository, metric writes to SageMaker's two namespaces by condition",
        )
        return role
