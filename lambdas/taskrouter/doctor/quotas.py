"""The quotas a stage needs: Lambda's concurrency, SageMaker's GPU instances, CodeBuild's builds."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from taskrouter.doctor import needs
from taskrouter.doctor.aws import Aws, error_code
from taskrouter.doctor.context import Context
from taskrouter.doctor.findings import Finding, blocks, ok, skipped, unchecked
from taskrouter.doctor.stage import Training

# "You can reserve up to the Unreserved account concurrency value minus 100. The remaining 100 units
# of concurrency are for functions that aren't using reserved concurrency."
# (https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html). Provisioned concurrency
# counts within a function's reserved concurrency and cannot exceed it
# (https://docs.aws.amazon.com/lambda/latest/dg/provisioned-concurrency.html).
UNRESERVED_FLOOR = 100
LAMBDA_CONCURRENCY_QUOTA = "L-B99A9384"  # Service Quotas' "Concurrent executions" of Lambda
DEFAULT_LAMBDA_CONCURRENCY = 1000  # an account's usual quota, what a raised one is asked up to at least
BUILDS_LOOKED_AT = 100  # the newest builds of the region, one page of ListBuilds (BatchGetBuilds' limit too)
TRAINING_INSTANCES = 1  # `taskrouter adapter launch` runs one job on one instance


@dataclass(frozen=True)
class Quota:
    code: str
    name: str
    value: int


class ServiceQuotas:
    """A service's quotas matched by name (names are what AWS documents; codes differ by instance
    type): applied values first; a quota never changed may be listed with its default only."""

    def __init__(self, aws: Aws, service_code: str) -> None:
        self._aws = aws
        self._service_code = service_code
        self._lists: dict[str, dict[str, Quota]] = {}

    def find(self, name: str) -> Quota | None:
        for operation in ("ListServiceQuotas", "ListAWSDefaultServiceQuotas"):
            if operation not in self._lists:
                self._lists[operation] = {
                    quota["QuotaName"]: Quota(quota["QuotaCode"], quota["QuotaName"], int(quota.get("Value", 0)))
                    for quota in self._aws.items("service-quotas", operation, "Quotas", ServiceCode=self._service_code)
                }
            if name in self._lists[operation]:
                return self._lists[operation][name]
        return None


def lambda_concurrency(ctx: Context) -> Finding:
    """What the stage reserves (provisioned concurrency of functions with no reservation too), against
    GetAccountSettings' limit less what other functions reserve: at least 100 must stay unreserved."""
    assert ctx.assembly is not None
    check, region = "lambda concurrency", ctx.region
    functions = needs.lambda_concurrency(ctx.assembly)
    limits = ctx.aws.call("lambda", "GetAccountSettings")["AccountLimit"]
    limit, unreserved = int(limits["ConcurrentExecutions"]), int(limits["UnreservedConcurrentExecutions"])
    held_by_stage = sum(_reserved_now(ctx, function) for function in functions)  # once deployed
    by_others = max(limit - unreserved - held_by_stage, 0)
    takes = sum(function.takes for function in functions)
    left = limit - by_others - takes
    parts = ", ".join(f"{function.label} {function.takes}" for function in functions) or "none"
    others = f", other functions reserve {by_others}" if by_others else ""
    if left >= UNRESERVED_FLOOR:
        return ok(check, f"the stage reserves {takes} ({parts}) of the account's {limit} in {region}{others}; "
                         f"{left} stay unreserved (Lambda keeps at least {UNRESERVED_FLOOR})")
    needed = by_others + takes + UNRESERVED_FLOOR
    return blocks(
        check,
        f"the account may run {limit} concurrent executions in {region}{others}; the stage reserves {takes} "
        f"({parts}) and Lambda keeps {UNRESERVED_FLOOR} unreserved, so it needs at least {needed} (the deploy would "
        "fail: \"decreases account's UnreservedConcurrentExecution below its minimum value\")",
        f"aws service-quotas request-service-quota-increase --service-code lambda --quota-code "
        f"{LAMBDA_CONCURRENCY_QUOTA} --desired-value {max(needed, DEFAULT_LAMBDA_CONCURRENCY)} --region {region}",
    )


def _reserved_now(ctx: Context, function: needs.FunctionConcurrency) -> int:
    """The reservation a deployed function of the stage holds now (0 before its first deploy): it is
    among what the account reserves already, and the deploy replaces it with the template's."""
    if function.reserved is None:  # provisioned only (none in this stage): counted as held by others
        return 0
    try:
        physical = ctx.aws.call("cloudformation", "DescribeStackResource", StackName=function.stack_name,
                                LogicalResourceId=function.logical_id)["StackResourceDetail"]["PhysicalResourceId"]
        answer = ctx.aws.call("lambda", "GetFunctionConcurrency", FunctionName=physical)
    except ClientError as error:
        if error_code(error) in ("ValidationError", "ResourceNotFoundException"):  # no such stack or function yet
            return 0
        raise
    return int(answer.get("ReservedConcurrentExecutions") or 0)


def endpoint_instances(ctx: Context, sagemaker: ServiceQuotas) -> list[Finding]:
    """The endpoint's instance type, at its managed scaling's maximum (the copies' maximum plus one
    while a rolling update starts its new copy), against "<type> for endpoint usage"."""
    assert ctx.assembly is not None
    by_type: dict[str, list[needs.EndpointInstances]] = defaultdict(list)
    for instances in needs.endpoint_instances(ctx.assembly):
        by_type[instances.instance_type].append(instances)
    if not by_type:
        return [skipped("endpoint instances", "the stage has no endpoint on instances")]
    findings = []
    for instance_type, endpoints in sorted(by_type.items()):
        at_deploy, at_most = sum(e.at_deploy for e in endpoints), sum(e.at_most for e in endpoints)
        why = f"{at_deploy} at deploy, up to {at_most} while scaling or rolling out"
        findings.append(_enough(ctx, sagemaker, "endpoint instances", endpoint_quota(instance_type), at_most, why,
                                f"gpu_instance_type or region in {ctx.stage.table}"))
    return findings


def training_instances(ctx: Context, sagemaker: ServiceQuotas) -> Finding:
    """`taskrouter adapter launch` runs one training job on one instance (managed spot by default)."""
    training = ctx.stage.training
    if training is None:
        return skipped("training instances", f"{ctx.stage.table} has no training table")
    return _enough(ctx, sagemaker, "training instances", training_quota(training), TRAINING_INSTANCES,
                   "one job of `taskrouter adapter launch`", f"training.instance_type or region in {ctx.stage.table}")


def endpoint_quota(instance_type: str) -> str:
    """Service Quotas' name for SageMaker endpoint instances of a type."""
    return f"{instance_type} for endpoint usage"


def training_quota(training: Training) -> str:
    """Service Quotas' name for the training jobs' instances (managed spot or on demand)."""
    return f"{training.instance_type} for {'spot training job usage' if training.spot else 'training job usage'}"


def _enough(ctx: Context, quotas: ServiceQuotas, check: str, name: str, needed: int, why: str, other_choice: str) -> Finding:
    quota = quotas.find(name)
    if quota is None:
        return blocks(check, f"Service Quotas has no {name!r} in {ctx.region}: SageMaker offers no such instances there",
                      f"choose another {other_choice}")
    if quota.value >= needed:
        return ok(check, f"{name!r} is {quota.value} in {ctx.region}; the stage needs {needed} ({why}; other "
                         "endpoints or jobs of the account on the same type share it)")
    return blocks(
        check, f"{name!r} is {quota.value} in {ctx.region}; the stage needs {needed} ({why})",
        f"aws service-quotas request-service-quota-increase --service-code sagemaker --quota-code {quota.code} "
        f"--desired-value {needed} --region {ctx.region} (or the Service Quotas console: Amazon SageMaker, {name!r}); "
        "an increase can take a day",
    )


def codebuild(ctx: Context) -> Finding:
    """No API tells how many builds an account may run: Service Quotas shows a default while a new
    account may run none ("Cannot have more than 0 builds in queue for the account"). A build the
    account ran in the region on the same environment is the one proof it may run one."""
    assert ctx.assembly is not None
    check = "codebuild"
    environments = needs.build_environments(ctx.assembly)
    if not environments:
        return skipped(check, "the stage runs no CodeBuild build")
    ran = _a_build_ran(ctx.aws, environments)
    labels = " and ".join(environment.label for environment in environments)
    if ran is not None:
        return ok(check, f"the account ran {ran['id']} ({labels}) in {ctx.region} on {ran['startTime']:%Y-%m-%d}: "
                         "it may run the base weights' staging")
    quota_names = ", ".join(f"\"Concurrently running builds for {env.label} environment\"" for env in environments)
    return unchecked(
        check,
        f"how many {labels} builds the account may run in {ctx.region} cannot be read (no API shows it; a new account "
        "may run none while Service Quotas shows a default), and it has run none: the base weights' staging needs one",
        f"if the deploy fails on BaseWeights with \"Cannot have more than 0 builds in queue for the account\", open an "
        f"AWS Support case (Support Center: Create case, Service limit increase, CodeBuild, {ctx.region}) for "
        f"{quota_names} of 1 or more, then deploy again",
    )


def _a_build_ran(aws: Aws, environments: list[needs.BuildEnvironment]) -> dict[str, Any] | None:
    ids = aws.call("codebuild", "ListBuilds", sortOrder="DESCENDING").get("ids", [])[:BUILDS_LOOKED_AT]
    if not ids:
        return None
    wanted = {(environment.environment_type, environment.compute_type) for environment in environments}
    for build in aws.call("codebuild", "BatchGetBuilds", ids=ids).get("builds", []):
        environment = build.get("environment", {})
        if (environment.get("type"), environment.get("computeType")) in wanted and build.get("startTime"):
            return build
    return None
