"""The primary backend: a SageMaker endpoint serving the base LLM from AWS's LMI container, with each
configured LoRA adapter hosted on it as an adapter inference component (their archives shipped by
`model_artifacts.py`)."""

from __future__ import annotations

from aws_cdk import (
    CfnOutput,
    RemovalPolicy,
    Stack,
    aws_iam as iam,
    aws_kms as kms,
    aws_logs as logs,
    aws_sagemaker as sagemaker,
)
from aws_cdk.region_info import FactName
from constructs import Construct

from infra.config import AdapterManifest, ServingSettings, StageConfig
from infra.model_artifacts import AdapterArchive
from infra.nag import acknowledge

VARIANT_NAME = "AllTraffic"


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
        archives: dict[str, AdapterArchive],
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.endpoint_name = stage.endpoint_name
        base_component_name = stage.base_component_name
        self.component_names = [base_component_name, *(stage.adapter_component_name(m.name) for m in manifests)]

        # SageMaker creates these groups on first start (the endpoint's, and one per inference
        # component); owning them gives them a retention and scopes the role's log writes. They
        # have fixed names in a stateless stack: never retained, or a rolled-back first deploy
        # would leave them behind and block the next one.
        log_groups = [
            logs.LogGroup(
                self,
                construct_id,
                log_group_name=name,
                retention=stage.log_retention,
                removal_policy=RemovalPolicy.DESTROY,
            )
            for construct_id, name in (
                ("EndpointLogs", f"/aws/sagemaker/Endpoints/{self.endpoint_name}"),
                ("BaseComponentLogs", f"/aws/sagemaker/InferenceComponents/{base_component_name}"),
                *(
                    (f"AdapterComponentLogs{_pascal(m.name)}", f"/aws/sagemaker/InferenceComponents/{stage.adapter_component_name(m.name)}")
                    for m in manifests
                ),
            )
        ]
        role = self._execution_role(serving, stage, [archive.object_arn for archive in archives.values()], log_groups)

        image = dlc_image_uri(self, serving.image_repository, stage.lmi_image_tag)
        model = sagemaker.CfnModel(
            self,
            "BaseModel",
            execution_role_arn=role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image,
                environment={
                    "HF_MODEL_ID": stage.base_model.id,
                    "OPTION_REVISION": stage.base_model.revision,
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
            # Instance types with local NVMe storage encrypt it in hardware and refuse a KmsKeyId.
            kms_key_id=self.volume_key.key_arn if self.volume_key else None,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT_NAME,
                    instance_type=stage.gpu_instance_type,
                    initial_instance_count=stage.gpu_instance_count,
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
        )
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
            if archive.upload is not None:
                adapter.node.add_dependency(archive.upload)  # in the bucket before SageMaker reads it

        self.endpoint_arn = Stack.of(self).format_arn(
            service="sagemaker", resource="endpoint", resource_name=self.endpoint_name
        )
        CfnOutput(self, "EndpointName", value=endpoint.attr_endpoint_name)
        CfnOutput(self, "RouterComponentName", value=stage.router_component_name)

    def _execution_role(
        self,
        serving: ServingSettings,
        stage: StageConfig,
        archive_arns: list[str],
        log_groups: list[logs.LogGroup],
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
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[group.log_group_arn for group in log_groups],
            )
        )
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
