"""The base model's weights, staged in the stage's bucket at their pinned revision on the first
deploy, so that the endpoint reads them from S3 (uncompressed `ModelDataSource`) and can run with
network isolation: at run time it reaches nothing outside AWS.

Why a CodeBuild project run by a custom resource: `cdk deploy` stays the one command (no manual
upload before it, no stack order), the copy runs in AWS next to the bucket (several GB for a 7B base:
minutes in CodeBuild, where a Lambda function could hold neither the files nor the time), and it is
idempotent per revision (a marker object beside the folder), so a re-deploy, a retry or a rollback
to an earlier revision costs seconds. The hub is reached only here, at deploy time.
"""

from __future__ import annotations

import json

from aws_cdk import (
    CustomResource,
    Duration,
    RemovalPolicy,
    Stack,
    aws_codebuild as codebuild,
    aws_iam as iam,
    aws_kms as kms,
    aws_lambda as lambda_,
    aws_logs as logs,
    aws_s3 as s3,
    custom_resources as cr,
)
from constructs import Construct

from infra.config import StageConfig
from infra.lambda_code import ARCHITECTURE, LAMBDA_RUNTIME_REASON, RUNTIME, function_code
from infra.nag import acknowledge, as_nag_shows

HUGGINGFACE_HUB = "huggingface_hub==2.4.0"
# What the engine loads (safetensors weights, configs, tokenizer); other formats of the same weights
# (PyTorch pickles, GGUF, ONNX, original checkpoints) only cost copy time and disk.
IGNORED = ["*.bin", "*.pth", "*.pt", "*.gguf", "*.onnx", "*.msgpack", "*.h5", "original/*"]
# A 7B base (~15 GB) copies in a few minutes; the build stops before the deploy gives up waiting, so a
# retried deploy never finds an earlier copy still running.
BUILD_TIMEOUT = Duration.minutes(50)
# CodeBuild's default queued timeout is 8 hours: a build an account's limit keeps queued would outlive
# the deploy's hour and start later for nothing. Queued and running, it ends within the hour.
QUEUED_TIMEOUT = Duration.minutes(5)
STAGING_TIMEOUT = Duration.hours(1)


def marker_key(prefix: str) -> str:
    """The object written last, once every file is in: `base/<id>/<revision>.staged`. Outside the
    folder, so the endpoint never downloads it."""
    return prefix.rstrip("/") + ".staged"


def staging_script() -> str:
    """Copy the revision from the hub unless its marker says it is there already; the marker last, so
    a copy that failed half-way is never taken for a complete one. POSIX sh: CodeBuild runs buildspec
    commands with /bin/sh, which is dash on its Ubuntu images (no `pipefail`)."""
    return "\n".join([
        "set -eu",
        'if aws s3api head-object --bucket "$BUCKET" --key "$MARKER" >/dev/null 2>&1; then',
        '  echo "s3://$BUCKET/$PREFIX holds $MODEL_ID@$REVISION already"',
        "else",
        f"  pip install --quiet --disable-pip-version-check '{HUGGINGFACE_HUB}'",
        "  python3 -c 'import json, os; from huggingface_hub import snapshot_download; "
        'snapshot_download(os.environ["MODEL_ID"], revision=os.environ["REVISION"], local_dir=os.environ["WEIGHTS"], '
        'ignore_patterns=json.loads(os.environ["IGNORED"]))\'',
        '  rm -rf "$WEIGHTS/.cache"',
        '  aws s3 sync "$WEIGHTS" "s3://$BUCKET/$PREFIX" --only-show-errors',
        '  echo "{\\"model_id\\": \\"$MODEL_ID\\", \\"revision\\": \\"$REVISION\\"}" | aws s3 cp - "s3://$BUCKET/$MARKER"',
        "fi",
    ])


def buildspec() -> dict:
    return {"version": "0.2", "phases": {"build": {"commands": [staging_script()]}}}


class BaseWeights(Construct):
    """Stages `stage.base_model` under `stage.base_weights_prefix` of `bucket` during the deploy."""

    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, bucket: s3.IBucket, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        prefix = stage.base_weights_prefix
        self.s3_uri = bucket.s3_url_for_object(prefix)
        self.objects_arn = bucket.arn_for_objects(prefix + "*")
        self.prefix = prefix

        log_group = logs.LogGroup(self, "Logs", retention=stage.log_retention, removal_policy=RemovalPolicy.DESTROY)
        project = codebuild.Project(
            self,
            "Copy",
            description=f"TaskRouter {stage.name}: copies {stage.base_model.id}@{stage.base_model.revision[:12]} "
            "from the hub into the artifact bucket",
            build_spec=codebuild.BuildSpec.from_object(buildspec()),
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                compute_type=codebuild.ComputeType.SMALL,  # 64 GB of disk: a 7B base fits four times over
            ),
            environment_variables={
                name: codebuild.BuildEnvironmentVariable(value=value)
                for name, value in {
                    "MODEL_ID": stage.base_model.id,
                    "REVISION": stage.base_model.revision,
                    "BUCKET": bucket.bucket_name,
                    "PREFIX": prefix,
                    "MARKER": marker_key(prefix),
                    "IGNORED": json.dumps(IGNORED),
                    "WEIGHTS": "/tmp/weights",
                }.items()
            },
            encryption_key=key,
            timeout=BUILD_TIMEOUT,
            queued_timeout=QUEUED_TIMEOUT,
            logging=codebuild.LoggingOptions(cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=log_group)),
        )
        # The revision's folder and marker, nothing else of the bucket.
        project.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[self.objects_arn, bucket.arn_for_objects(marker_key(prefix))],
        ))
        project.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[bucket.bucket_arn], conditions={"StringLike": {"s3:prefix": [prefix + "*"]}},
        ))
        key.grant(project, "kms:Decrypt", "kms:GenerateDataKey")  # SSE-KMS writes and the marker's read
        self._acknowledge_project(project, bucket)

        handlers = [
            lambda_.Function(
                self,
                name,
                description=f"TaskRouter {stage.name}: {what}",
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                code=function_code(),
                handler=f"taskrouter.handlers.base_weights.{handler}",
                timeout=Duration.seconds(30),
                memory_size=256,
                log_group=logs.LogGroup(self, f"{name}Logs", retention=stage.log_retention,
                                        removal_policy=RemovalPolicy.DESTROY),
            )
            for name, handler, what in (
                ("Start", "on_event", "starts the base weights' staging build"),
                ("Check", "is_complete", "reports whether the base weights' staging build is done"),
            )
        ]
        start, check = handlers
        start.add_to_role_policy(iam.PolicyStatement(actions=["codebuild:StartBuild"], resources=[project.project_arn]))
        check.add_to_role_policy(iam.PolicyStatement(actions=["codebuild:BatchGetBuilds"], resources=[project.project_arn]))
        provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=start,
            is_complete_handler=check,
            query_interval=Duration.seconds(30),
            total_timeout=STAGING_TIMEOUT,
            log_group=logs.LogGroup(self, "ProviderLogs", retention=stage.log_retention,
                                    removal_policy=RemovalPolicy.DESTROY),
        )
        self.resource = CustomResource(
            self,
            "Staged",
            service_token=provider.service_token,
            resource_type="Custom::BaseWeights",
            properties={
                "ProjectName": project.project_name,
                "ModelId": stage.base_model.id,
                "Revision": stage.base_model.revision,
                "S3Uri": self.s3_uri,
            },
        )
        self._acknowledge(handlers, provider)

    def _acknowledge_project(self, project: codebuild.Project, bucket: s3.IBucket) -> None:
        stack = Stack.of(self)
        project_name = f"<{stack.get_logical_id(project.node.default_child)}>"
        reason = ("CodeBuild's own grants to its project: its log streams and test reports, named by the "
                  "project; the build writes only its revision's folder")
        for resource in (
            f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:/aws/codebuild/{project_name}:*",
            f"arn:{stack.partition}:codebuild:{stack.region}:{stack.account}:report-group/{project_name}-*",
        ):
            acknowledge(project, f"AwsSolutions-IAM5[Resource::{as_nag_shows(stack, resource)}]", reason)
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            acknowledge(project, f"AwsSolutions-IAM5[Action::{action}]",
                        "CodeBuild's own grant on the project's encryption key (the artifact key), for its build "
                        "artifacts and logs; the key is this stage's alone")
        acknowledge(project, f"AwsSolutions-IAM5[Resource::<{stack.get_logical_id(bucket.node.default_child)}.Arn>/"
                    f"{self.prefix}*]", "the base model's files: every object of its one pinned revision's folder")

    def _acknowledge(self, handlers: list[lambda_.Function], provider: cr.Provider) -> None:
        stack = Stack.of(self)
        for function in handlers:
            acknowledge(function, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
                        "a deploy-time function's logs; its one other grant names the staging project")
            acknowledge(function, "AwsSolutions-L1",
                        LAMBDA_RUNTIME_REASON)
        reason = ("CDK's Provider framework (custom_resources.Provider): its functions and state machine run only "
                  "during a deploy, and their grants are CDK's own: invoke the two handlers and each other")
        invoked = [*handlers, provider.node.find_child("framework-isComplete"), provider.node.find_child("framework-onTimeout")]
        findings = [f"AwsSolutions-IAM5[Resource::<{stack.get_logical_id(f.node.default_child)}.Arn>:*]" for f in invoked]
        for finding in (*findings, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
                        "AwsSolutions-L1", "AwsSolutions-SF1", "AwsSolutions-SF2"):
            acknowledge(provider, finding, reason)
