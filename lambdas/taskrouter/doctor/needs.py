"""What a stage needs of its account, read from its synthesized templates (no AWS call here)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from taskrouter.doctor.assembly import StageAssembly

# Types CloudFormation's registry does not describe: CDK's metadata (emitted only where the region
# has it) and custom resources (a Lambda function or a CodeBuild project of the stage's own).
_NOT_REGISTRY_TYPES = ("AWS::CDK::Metadata", "AWS::CloudFormation::CustomResource")
_PROVISIONED_DIMENSION = "lambda:function:ProvisionedConcurrency"
_CDK_SUFFIX = re.compile(r"[0-9A-F]{8}$")  # the hash CDK appends to a construct's logical id
# CodeBuild's names for its environments, as its quotas name them ("... for Linux/Small environment").
_BUILD_PLATFORMS = {"LINUX_CONTAINER": "Linux", "ARM_CONTAINER": "ARM", "LINUX_GPU_CONTAINER": "Linux GPU",
                    "WINDOWS_SERVER_2019_CONTAINER": "Windows Server 2019", "LINUX_LAMBDA_CONTAINER": "Linux Lambda",
                    "ARM_LAMBDA_CONTAINER": "ARM Lambda"}
_BUILD_SIZES = {"BUILD_GENERAL1_SMALL": "Small", "BUILD_GENERAL1_MEDIUM": "Medium", "BUILD_GENERAL1_LARGE": "Large",
                "BUILD_GENERAL1_XLARGE": "XLarge", "BUILD_GENERAL1_2XLARGE": "2XLarge"}


@dataclass(frozen=True)
class FunctionConcurrency:
    """A function that takes executions out of the account's unreserved pool."""

    stack_name: str
    logical_id: str
    reserved: int | None
    provisioned: int  # at most: the alias's value, or its Application Auto Scaling target's maximum

    @property
    def takes(self) -> int:
        """Provisioned concurrency counts within a function's reserved concurrency, where it has one
        (and cannot exceed it); without one it comes out of the unreserved pool itself."""
        return self.reserved if self.reserved is not None else self.provisioned

    @property
    def label(self) -> str:
        """"Router16807C72" -> "router", "AlarmHandler17D2ADA9" -> "alarm handler"."""
        words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", _CDK_SUFFIX.sub("", self.logical_id))
        return " ".join(words).lower() or self.logical_id


@dataclass(frozen=True)
class EndpointInstances:
    instance_type: str
    at_deploy: int  # the variant's initial instance count
    at_most: int  # managed instance scaling's maximum: the copies' maximum plus one while rolling


@dataclass(frozen=True)
class BuildEnvironment:
    environment_type: str  # "LINUX_CONTAINER"
    compute_type: str  # "BUILD_GENERAL1_SMALL"

    @property
    def label(self) -> str:
        """"Linux/Small", as CodeBuild's quotas and errors name it."""
        platform = _BUILD_PLATFORMS.get(self.environment_type, self.environment_type)
        return f"{platform}/{_BUILD_SIZES.get(self.compute_type, self.compute_type)}"


def lambda_concurrency(assembly: StageAssembly) -> list[FunctionConcurrency]:
    needs = []
    for stack in assembly.stacks:
        functions = stack.resources("AWS::Lambda::Function")
        provisioned = _provisioned_by_function(stack.template.get("Resources", {}))
        for logical_id, function in functions.items():
            reserved = function.get("Properties", {}).get("ReservedConcurrentExecutions")
            most = provisioned.get(logical_id, 0)
            if reserved is not None or most:
                needs.append(FunctionConcurrency(stack.stack_name, logical_id, _int(reserved), most))
    return needs


def endpoint_instances(assembly: StageAssembly) -> list[EndpointInstances]:
    needs = []
    for stack in assembly.stacks:
        for config in stack.resources("AWS::SageMaker::EndpointConfig").values():
            for variant in config.get("Properties", {}).get("ProductionVariants", []):
                if "InstanceType" not in variant:  # serverless variants use no instance
                    continue
                initial = _int(variant.get("InitialInstanceCount")) or 0
                scaling = variant.get("ManagedInstanceScaling", {})
                most = _int(scaling.get("MaxInstanceCount")) if scaling.get("Status") == "ENABLED" else None
                needs.append(EndpointInstances(variant["InstanceType"], initial, max(initial, most or 0)))
    return needs


def build_environments(assembly: StageAssembly) -> list[BuildEnvironment]:
    found = {
        BuildEnvironment(str(environment.get("Type")), str(environment.get("ComputeType")))
        for stack in assembly.stacks
        for project in stack.resources("AWS::CodeBuild::Project").values()
        if (environment := project.get("Properties", {}).get("Environment"))
    }
    return sorted(found, key=lambda environment: environment.label)


def resource_types(assembly: StageAssembly) -> list[str]:
    """The resource types CloudFormation must know in the stage's region."""
    return sorted({
        str(resource.get("Type"))
        for stack in assembly.stacks
        for resource in stack.template.get("Resources", {}).values()
        if str(resource.get("Type")).startswith("AWS::") and resource.get("Type") not in _NOT_REGISTRY_TYPES
    })


def _provisioned_by_function(resources: dict[str, Any]) -> dict[str, int]:
    """The most provisioned concurrency each function's aliases and versions may hold."""
    owner = {  # an alias or a version -> the function it belongs to
        logical_id: _ref(resource.get("Properties", {}).get("FunctionName"))
        for logical_id, resource in resources.items()
        if resource.get("Type") in ("AWS::Lambda::Alias", "AWS::Lambda::Version")
    }
    most: dict[str, int] = {}

    def take(qualifier: str | None, value: Any) -> None:
        function = owner.get(qualifier or "")
        if function and (count := _int(value)) is not None:
            most[function] = max(most.get(function, 0), count)

    for logical_id in owner:
        take(logical_id, resources[logical_id].get("Properties", {}).get("ProvisionedConcurrencyConfig", {})
             .get("ProvisionedConcurrentExecutions"))
    for resource in resources.values():
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::ApplicationAutoScaling::ScalableTarget" and \
                properties.get("ScalableDimension") == _PROVISIONED_DIMENSION:
            for qualifier in _refs(properties.get("ResourceId")):
                take(qualifier, properties.get("MaxCapacity"))
    return most


def _ref(value: Any) -> str | None:
    return value.get("Ref") if isinstance(value, dict) and isinstance(value.get("Ref"), str) else None


def _refs(value: Any) -> list[str]:
    """Every `Ref` inside an intrinsic function (a scalable target's ResourceId joins the alias's)."""
    if isinstance(value, dict):
        return ([value["Ref"]] if isinstance(value.get("Ref"), str) else []) + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for item in value for r in _refs(item)]
    return []


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, str)) and str(value).isdigit() else None
