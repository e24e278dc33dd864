"""An AWS account as `taskrouter doctor` finds it. moto answers what it implements (STS, CloudFormation,
SSM, Secrets Manager, SNS, CodeBuild, Lambda functions); botocore `before-call` handlers answer the
rest, as botocore's Stubber does, each answer checked against the operation's output shape: Lambda's
GetAccountSettings, Service Quotas' lists and CloudFormation's DescribeType (none in moto), and the
answers moto never gives (throttling, AccessDenied, an unconfirmed e-mail subscription). A call sent to
an endpoint of a test's own (AWS_ENDPOINT_URL...) goes there. CALLS: every call the doctor makes, with
an answer the service gives."""

from __future__ import annotations

import json
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.session
from botocore.awsrequest import AWSResponse
from botocore.validate import validate_parameters

from taskrouter.repository import ROOT

from .deployed_router import deploy_router

SNAPSHOTS = ROOT / "tests" / "infra" / "__snapshots__" / "test_snapshots"
_SNAPSHOT = re.compile(r"test_stack_matches_snapshot\[(?P<stack>\w+)-(?P<stage>\w+)\]\.json")
# The order synth lists a stage's stacks in (its manifest.json), which the doctor's lines follow.
STACK_ORDER = ("Registry", "ModelArtifacts", "Operations", "Capture", "ModelHosting", "Api", "Monitoring")
ENDPOINT_QUOTA = "ml.g5.2xlarge for endpoint usage"
SPOT_QUOTA = "ml.g5.2xlarge for spot training job usage"
BOOTSTRAP_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
REAL_EMAIL = "oncall@acme-sales.io"
ACCOUNT = "123456789012"  # moto's
_PAGE = 100  # Service Quotas' largest page
_PARAMS = "fake-account-params"  # where a call's parameters wait in its request context


def write_assembly(cdk_out: Path, stage: str, region: str, *, templates_of: str = "dev", bootstrap_version: int = 6) -> Path:
    """A cloud assembly as `cdk synth` writes it (manifest.json, assembly-<stage>/), holding the
    snapshotted templates of every stack of one of the committed stages (Capture where it captures):
    what tests/infra holds the synth to."""
    directory = cdk_out / f"assembly-{stage}"
    directory.mkdir(parents=True)
    artifacts: dict[str, Any] = {}
    for stack_id, snapshot in snapshots_of(templates_of).items():
        template = json.loads(snapshot.read_text())
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


def snapshots_of(stage: str) -> dict[str, Path]:
    """The snapshotted template of each stack of a committed stage, by stack id."""
    found = {match["stack"]: path for path in SNAPSHOTS.iterdir()
             if (match := _SNAPSHOT.fullmatch(path.name)) and match["stage"] == stage}
    assert found, f"no snapshot of stage {stage} in {SNAPSHOTS}"
    return dict(sorted(found.items(), key=lambda item: STACK_ORDER.index(item[0]) if item[0] in STACK_ORDER else 99))


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


ADAPTER_ENV = {"TASKROUTER_ADAPTER_NAME": "sales-router-v2", "TASKROUTER_ADAPTER_TASKS": "follow_up_email,prepare_meeting_minutes"}


def deploy_stage(stage: str, region: str, emails: list[str], *, secret_set: bool, router_reserved: int = 20,
                 router_env: dict[str, str] = ADAPTER_ENV) -> dict[str, str]:
    """The stacks the doctor reads after a deploy: Operations (its secret, as CloudFormation creates
    it), Monitoring (the alarm topic and its e-mail subscriptions), Api (the router, reserved, and the
    output naming the live router, whose adapter saw two of the registry's four tasks)."""
    live_router = deploy_router(stage, region, router_env)
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

    def _answer(self, model: Any, params: dict[str, Any], context: dict[str, Any],
                **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        service, operation = model.service_model.signing_name, model.name
        self.asked.append(f"{service}:{operation}")
        if not urlsplit(params["url"]).hostname.endswith(".amazonaws.com"):
            return None  # an endpoint of the test's own (AWS_ENDPOINT_URL...): the request goes there
        params = context.get(_PARAMS, {})
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


@dataclass(frozen=True)
class Call:
    """One AWS call of the doctor or of `taskrouter ops unseen`, and an answer the service gives to it
    (the fields of its API reference's response syntax)."""

    service: str  # boto3's name
    operation: str
    params: dict[str, Any]
    result: dict[str, Any]
    paged: str | None = None  # read page by page (Aws.items), the items under this key

    @property
    def action(self) -> str:
        """The IAM action, as the doctor names a call: "servicequotas:ListServiceQuotas"."""
        return f"{_MODELS.get_service_model(self.service).signing_name}:{self.operation}"


_MODELS = botocore.session.get_session()  # botocore's service models, loaded once
_WHEN = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
_ROUTER_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:dev-Api-Router16807C72-x1Y2z3"
_TOPIC = f"arn:aws:sns:us-east-1:{ACCOUNT}:dev-alarms"
_SECRET = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:OpenAIApiKey-dev-AbCdEf"
_QUOTA = {"ServiceCode": "sagemaker", "ServiceName": "Amazon SageMaker", "QuotaArn":
          f"arn:aws:servicequotas:us-east-1:{ACCOUNT}:sagemaker/L-1D5F8A1B", "QuotaCode": "L-1D5F8A1B",
          "QuotaName": ENDPOINT_QUOTA, "Value": 4.0, "Unit": "None", "Adjustable": True, "GlobalQuota": False}

# Every call the doctor makes (tests/integration/test_doctor.py holds a full run to this list) and the
# ones `taskrouter ops unseen` makes (DescribeStacks, GetFunctionConfiguration, Query: the same).
CALLS = (
    Call("sts", "GetCallerIdentity", {}, {"UserId": "AIDAJQABLZS4A3QDU576Q", "Account": ACCOUNT,
                                          "Arn": f"arn:aws:iam::{ACCOUNT}:user/ops"}),
    Call("cloudformation", "DescribeStacks", {"StackName": "CDKToolkit"}, {"Stacks": [{
        "StackId": f"arn:aws:cloudformation:us-east-1:{ACCOUNT}:stack/CDKToolkit/0b7f8d10-e8f4-11ee-9f6a-0a1b2c3d4e5f",
        "StackName": "CDKToolkit", "CreationTime": _WHEN, "StackStatus": "CREATE_COMPLETE",
        "Outputs": [{"OutputKey": "BootstrapVersion", "OutputValue": "30"}]}]}),
    Call("ssm", "GetParameter", {"Name": BOOTSTRAP_PARAMETER}, {"Parameter": {
        "Name": BOOTSTRAP_PARAMETER, "Type": "String", "Value": "30", "Version": 1, "LastModifiedDate": _WHEN,
        "ARN": f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/cdk-bootstrap/hnb659fds/version", "DataType": "text"}}),
    Call("cloudformation", "DescribeType", {"Type": "RESOURCE", "TypeName": "AWS::Lambda::Function"}, {
        "Arn": "arn:aws:cloudformation:us-east-1::type/resource/AWS-Lambda-Function", "Type": "RESOURCE",
        "TypeName": "AWS::Lambda::Function", "Visibility": "PUBLIC", "DeprecatedStatus": "LIVE"}),
    Call("lambda", "GetAccountSettings", {}, {
        "AccountLimit": {"TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800,
                         "ConcurrentExecutions": 1000, "UnreservedConcurrentExecutions": 979},
        "AccountUsage": {"TotalCodeSize": 5242880, "FunctionCount": 9}}),
    Call("cloudformation", "DescribeStackResource", {"StackName": "dev-Api", "LogicalResourceId": "Router16807C72"},
         {"StackResourceDetail": {"StackName": "dev-Api", "LogicalResourceId": "Router16807C72",
                                  "PhysicalResourceId": "dev-Api-Router16807C72-x1Y2z3",
                                  "ResourceType": "AWS::Lambda::Function", "LastUpdatedTimestamp": _WHEN,
                                  "ResourceStatus": "CREATE_COMPLETE"}}),
    Call("lambda", "GetFunctionConcurrency", {"FunctionName": "dev-Api-Router16807C72-x1Y2z3"},
         {"ReservedConcurrentExecutions": 20}),
    Call("service-quotas", "ListServiceQuotas", {"ServiceCode": "sagemaker"}, {"Quotas": [_QUOTA]}, paged="Quotas"),
    Call("service-quotas", "ListAWSDefaultServiceQuotas", {"ServiceCode": "sagemaker"}, {"Quotas": [_QUOTA]},
         paged="Quotas"),
    Call("codebuild", "ListBuilds", {"sortOrder": "DESCENDING"}, {"ids": ["dev-BaseWeights:5e6f7a8b"]}),
    Call("codebuild", "BatchGetBuilds", {"ids": ["dev-BaseWeights:5e6f7a8b"]}, {"builds": [{
        "id": "dev-BaseWeights:5e6f7a8b", "startTime": _WHEN, "buildStatus": "SUCCEEDED",
        "environment": {"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                        "computeType": "BUILD_GENERAL1_SMALL"}}], "buildsNotFound": []}),
    Call("secretsmanager", "DescribeSecret", {"SecretId": _SECRET}, {
        "ARN": _SECRET, "Name": "OpenAIApiKey-dev", "LastChangedDate": _WHEN,
        "VersionIdsToStages": {"a1b2c3d4-5678-90ab-cdef-EXAMPLE11111": ["AWSPREVIOUS"],
                               "a1b2c3d4-5678-90ab-cdef-EXAMPLE22222": ["AWSCURRENT"]}}),
    Call("sns", "ListSubscriptionsByTopic", {"TopicArn": _TOPIC}, {"Subscriptions": [{
        "SubscriptionArn": f"{_TOPIC}:0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", "Owner": ACCOUNT, "Protocol": "email",
        "Endpoint": REAL_EMAIL, "TopicArn": _TOPIC}]}, paged="Subscriptions"),
    Call("lambda", "GetFunctionConfiguration", {"FunctionName": "dev-Api-Router16807C72-x1Y2z3", "Qualifier": "live"}, {
        "FunctionName": "dev-Api-Router16807C72-x1Y2z3", "FunctionArn": f"{_ROUTER_ARN}:live", "Runtime": "python3.13",
        "Environment": {"Variables": {"TASKROUTER_TABLE_NAME": "taskrouter-dev-tasks",
                                      "TASKROUTER_ADAPTER_NAME": "sales-router-v2"}}}),
    Call("dynamodb", "Query", {"TableName": "taskrouter-dev-tasks", "KeyConditionExpression": "#pk = :pk",
                               "ExpressionAttributeNames": {"#pk": "pk"},
                               "ExpressionAttributeValues": {":pk": {"S": "task"}}},
         {"Items": [{"pk": {"S": "task"}, "sk": {"S": "follow_up_email"}}], "Count": 1, "ScannedCount": 1}),
)
