"""An AWS account as `taskrouter doctor` finds it. moto answers what it implements (STS, CloudFormation,
SSM, Secrets Manager, SNS, CodeBuild, Lambda functions); botocore `before-call` handlers answer the
rest, as botocore's Stubber does, each answer checked against the operation's output shape: Lambda's
GetAccountSettings, Service Quotas' lists and CloudFormation's DescribeType (none in moto), and the
answers moto never gives (throttling, AccessDenied, an unconfirmed e-mail subscription)."""

from __future__ import annotations

import json
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.validate import validate_parameters

from taskrouter.repository import ROOT

from .deployed_router import deploy_router

SNAPSHOTS = ROOT / "tests" / "infra" / "__snapshots__" / "test_snapshots"
STACK_IDS = ("Registry", "ModelArtifacts", "Operations", "ModelHosting", "Api", "Monitoring")
ENDPOINT_QUOTA = "ml.g5.2xlarge for endpoint usage"
SPOT_QUOTA = "ml.g5.2xlarge for spot training job usage"
BOOTSTRAP_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
REAL_EMAIL = "oncall@acme-sales.io"
_PAGE = 100  # Service Quotas' largest page
_PARAMS = "fake-account-params"  # where a call's parameters wait in its request context


def write_assembly(cdk_out: Path, stage: str, region: str, *, templates_of: str = "dev", bootstrap_version: int = 6) -> Path:
    """A cloud assembly as `cdk synth` writes it (manifest.json, assembly-<stage>/), holding the
    snapshotted templates of one of the committed stages: what tests/infra holds the synth to."""
    directory = cdk_out / f"assembly-{stage}"
    directory.mkdir(parents=True)
    artifacts: dict[str, Any] = {}
    for stack_id in STACK_IDS:
        template = json.loads((SNAPSHOTS / f"test_stack_matches_snapshot[{stack_id}-{templates_of}].json").read_text())
        (directory / f"{stage}{stack_id}.template.json").write_text(json.dumps(template))
        versions = {"requiresBootstrapStackVersion": bootstrap_version, "bootstrapStackVersionSsmParameter": BOOTSTRAP_PARAMETER}
        artifacts[f"{stage}{stack_id}.assets"] = {"type": "cdk:asset-manifest", "properties": {"file": "x.assets.json", **versions}}
        artifacts[f"{stage}{stack_id}"] = {
            "type": "aws:cloudformation:stack",
            "environment": f"aws://unknown-account/{region}",
            "displayName": f"{stage}/{stack_id}",
            "properties": {"templateFile": f"{stage}{stack_id}.template.json", "stackName": f"{stage}-{stack_id}", **versions},
        }
    (directory / "manifest.json").write_text(json.dumps({"version": "55.0.0", "artifacts": artifacts}))
    # Newer than any source synth reads, even one another engineer saves while the tests run.
    tomorrow = time.time() + 86_400
    os.utime(directory / "manifest.json", (tomorrow, tomorrow))
    nested = {"type": "cdk:cloud-assembly", "properties": {"directoryName": directory.name, "displayName": stage}}
    (cdk_out / "manifest.json").write_text(json.dumps({"version": "55.0.0", "artifacts": {directory.name: nested}}))
    return cdk_out


def write_stages(path: Path, *, emails: list[str] | None = None, region: str | None = None, account: str | None = None) -> Path:
    """infra/stages.toml with the dev stage's e-mails, region or account replaced."""
    text = (ROOT / "infra" / "stages.toml").read_text()
    dev, rest = text.split("\n[prod]\n", 1)
    if emails is not None:
        dev = re.sub(r"(?m)^alarm_emails = .*$", f"alarm_emails = {json.dumps(emails)}", dev)
    if region is not None:
        dev = re.sub(r'(?m)^region = ".*"', f'region = "{region}"', dev)
    if account is not None:
        dev = dev.replace("[dev]\n", f'[dev]\naccount = "{account}"\n', 1)
    path.write_text(f"{dev}\n[prod]\n{rest}")
    return path


def bootstrap(region: str, version: int = 30) -> None:
    """CDKToolkit as `cdk bootstrap` leaves it: its version in an SSM parameter and an output."""
    template = {
        "Resources": {"CdkBootstrapVersion": {"Type": "AWS::SSM::Parameter", "Properties": {
            "Name": BOOTSTRAP_PARAMETER, "Type": "String", "Value": str(version)}}},
        "Outputs": {"BootstrapVersion": {"Value": {"Fn::GetAtt": ["CdkBootstrapVersion", "Value"]}}},
    }
    boto3.client("cloudformation", region_name=region).create_stack(StackName="CDKToolkit", TemplateBody=json.dumps(template))


def ran_a_build(region: str) -> str:
    """One build of a Linux/Small project, as the account's history keeps it."""
    codebuild = boto3.client("codebuild", region_name=region)
    codebuild.create_project(
        name="earlier", source={"type": "S3", "location": "bucket/source.zip"}, artifacts={"type": "NO_ARTIFACTS"},
        environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0", "computeType": "BUILD_GENERAL1_SMALL"},
        serviceRole="arn:aws:iam::123456789012:role/codebuild",
    )
    return codebuild.start_build(projectName="earlier")["build"]["id"]


def deploy_stage(stage: str, region: str, emails: list[str], *, secret_set: bool, router_reserved: int = 20) -> dict[str, str]:
    """The stacks the doctor reads after a deploy: Operations (its secret, as CloudFormation creates
    it), Monitoring (the alarm topic and its e-mail subscriptions), Api (the router, reserved, and the
    output naming the live router, whose adapter saw two of the registry's four tasks)."""
    live_router = deploy_router(stage, region, {"TASKROUTER_ADAPTER_NAME": "sales-router-v2",
                                                "TASKROUTER_ADAPTER_TASKS": "follow_up_email,prepare_meeting_minutes"})
    cloudformation = boto3.client("cloudformation", region_name=region)
    secrets = boto3.client("secretsmanager", region_name=region)
    secret = secrets.create_secret(Name=f"OpenAIApiKey-{stage}", SecretString="q8Zr!kT2#generated-by-CloudFormation")["ARN"]
    if secret_set:
        secrets.put_secret_value(SecretId=secret, SecretString="sk-proj-test")
    topic = boto3.client("sns", region_name=region).create_topic(Name=f"{stage}-alarms")["TopicArn"]
    for email in emails:
        boto3.client("sns", region_name=region).subscribe(TopicArn=topic, Protocol="email", Endpoint=email)
    role = boto3.client("iam").create_role(RoleName=f"{stage}-router", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }))["Role"]["Arn"]
    router = {"Type": "AWS::Lambda::Function", "Properties": {
        "Code": {"ZipFile": "def handler(event, context): pass"}, "Handler": "index.handler", "Runtime": "python3.13",
        "Role": role, "ReservedConcurrentExecutions": router_reserved}}
    for stack_id, resources, outputs in (
        ("Operations", {"Marker": {"Type": "AWS::SNS::Topic"}}, {"OpenAISecretArn": secret}),
        ("Monitoring", {"Marker": {"Type": "AWS::SNS::Topic"}}, {"AlarmTopicArn": topic}),
        ("Api", {"Router16807C72": router}, {"RouterFunctionName": live_router}),
    ):
        template = {"Resources": resources, "Outputs": {key: {"Value": value} for key, value in outputs.items()}}
        cloudformation.create_stack(StackName=f"{stage}-{stack_id}", TemplateBody=json.dumps(template))
    return {"secret": secret, "topic": topic}


@dataclass
class FakeAccount:
    """What the account answers where moto cannot; `session` is the doctor's boto3 session."""

    concurrency: int = 1000  # Lambda's AccountLimit.ConcurrentExecutions
    reserved: int = 0  # what the account's functions reserve now
    applied_quotas: dict[str, int] = field(default_factory=lambda: {ENDPOINT_QUOTA: 4, SPOT_QUOTA: 2})
    default_quotas: dict[str, int] = field(default_factory=dict)
    absent_types: set[str] = field(default_factory=set)  # resource types CloudFormation's registry lacks
    failing: dict[str, str] = field(default_factory=dict)  # operation -> the error code it answers
    pending: set[str] = field(default_factory=set)  # addresses whose subscription was never confirmed
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # operation -> its answer, in moto's stead
    asked: list[str] = field(default_factory=list)  # every operation the doctor called

    def session(self, region: str) -> boto3.session.Session:
        session = boto3.session.Session(region_name=region)
        session.events.register("before-parameter-build", _keep_params)
        session.events.register("before-call", self._answer)
        session.events.register("after-call.sns.ListSubscriptionsByTopic", self._unconfirmed)
        return session

    def _answer(self, model: Any, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        params = context.get(_PARAMS, {})
        service, operation = model.service_model.signing_name, model.name
        self.asked.append(f"{service}:{operation}")
        if operation in self.failing:
            return _error(self.failing[operation], f"the fake account answers {operation} with {self.failing[operation]}")
        if operation in self.overrides:
            return self._answered(model, self.overrides[operation])
        answer = {
            ("lambda", "GetAccountSettings"): self._account_settings,
            ("servicequotas", "ListServiceQuotas"): lambda p: _page(self.applied_quotas, p),
            ("servicequotas", "ListAWSDefaultServiceQuotas"): lambda p: _page(self.default_quotas, p),
            ("cloudformation", "DescribeType"): self._type,
        }.get((service, operation))
        if answer is None:
            return None  # moto answers
        return self._answered(model, answer(params))

    @staticmethod
    def _answered(model: Any, response: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
        if "Error" in response:
            return _error(response["Error"]["Code"], response["Error"]["Message"])
        validate_parameters(response, model.output_shape)  # the shape the real service answers with
        return AWSResponse(None, 200, {}, None), {**response, "ResponseMetadata": {"HTTPStatusCode": 200}}

    def _account_settings(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "AccountLimit": {"TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800,
                             "ConcurrentExecutions": self.concurrency,
                             "UnreservedConcurrentExecutions": self.concurrency - self.reserved},
            "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 0},
        }

    def _type(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["TypeName"]
        if name in self.absent_types:
            return {"Error": {"Code": "TypeNotFoundException", "Message": f"The type '{name}' cannot be found."}}
        return {"Arn": f"arn:aws:cloudformation:eu-west-3::type/resource/{name.replace('::', '-')}", "Type": "RESOURCE",
                "TypeName": name, "Visibility": "PUBLIC", "DeprecatedStatus": "LIVE"}

    def _unconfirmed(self, parsed: dict[str, Any], **_: Any) -> None:
        for subscription in parsed.get("Subscriptions", []):
            if subscription.get("Endpoint") in self.pending:
                subscription["SubscriptionArn"] = "PendingConfirmation"


def _keep_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """The call's own parameters, for `before-call`, which sees the serialized request only."""
    context[_PARAMS] = dict(params)


def _page(quotas: dict[str, int], params: dict[str, Any]) -> dict[str, Any]:
    """SageMaker's hundreds of quotas, over pages: the stage's among 150 others."""
    every = [(f"ml.x{n}.large for processing job usage", 4) for n in range(150)] + sorted(quotas.items())
    start = int(params.get("NextToken") or 0)
    listed = [
        {"ServiceCode": "sagemaker", "ServiceName": "Amazon SageMaker", "QuotaCode": quota_code(name),
         "QuotaName": name, "Value": float(value), "Unit": "None", "Adjustable": True, "GlobalQuota": False}
        for name, value in every[start:start + _PAGE]
    ]
    more = start + _PAGE < len(every)
    return {"Quotas": listed, **({"NextToken": str(start + _PAGE)} if more else {})}


def quota_code(name: str) -> str:
    """A quota's code, fixed for its name (AWS's differ by instance type: the doctor matches names)."""
    return f"L-{zlib.crc32(name.encode()):08X}"


def _error(code: str, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    status = 429 if code == "TooManyRequestsException" else 400
    return AWSResponse(None, status, {}, None), {"Error": {"Code": code, "Message": message},
                                                 "ResponseMetadata": {"HTTPStatusCode": status}}
