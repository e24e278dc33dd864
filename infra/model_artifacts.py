"""The stage's model artifact bucket, stateful and kept apart from the endpoint, encrypted with the
stage's artifact key; what fills it on `cdk deploy` (the base model's weights, `base_weights.py`, and
the adapter archives); and the role of `taskrouter adapter launch`'s training jobs.

SageMaker takes an adapter only as a single `.tar.gz` (`InferenceComponentContainerSpecification.
ArtifactUrl`), but a CDK file asset's key keeps only the last suffix of its name (`<hash>.gz`): an
archive is therefore shipped in a folder asset and unpacked by a BucketDeployment into the bucket, at
a key named by the archive's digest (`adapters/<name>/<sha256>/adapter.tar.gz`), so a new version is
a new key and a rollback finds the old one still there. An archive a training job left in S3 is
used where it is.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass

from aws_cdk import (
    ArnFormat,
    CfnOutput,
    Duration,
    Stack,
    aws_iam as iam,
    aws_kms as kms,
    aws_s3 as s3,
    aws_s3_deployment as s3_deployment,
)
from aws_cdk.region_info import FactName
from constructs import Construct

from infra.base_weights import BaseWeights
from infra.config import ROOT, AdapterManifest, StageConfig
from infra.nag import acknowledge, as_nag_shows

def artifact_bucket_name(stage: StageConfig, stack: Stack) -> str:
    """A name known before the bucket exists, so that the endpoint's role names the objects it may read
    without a reference to this stack's resources (at most 62 characters)."""
    return f"taskrouter-{stage.name}-models-{stack.account}-{stack.region}"


TRAINING_PREFIX = "training/"  # a training job's inputs, code, checkpoints and output
TRAINING_IMAGE_REPOSITORY = "pytorch-training"  # AWS's Deep Learning Containers

ADAPTER_ARCHIVE = "adapter.tar.gz"


@dataclass(frozen=True)
class AdapterArchive:
    url: str  # the adapter's ArtifactUrl
    object_arn: str  # the one object the endpoint reads
    upload: Construct | None  # what puts it in the bucket (None: a training job did)


class ModelArtifactsStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, manifests: list[AdapterManifest], **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        common = dict(
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=stage.removal_policy,
            # A stage not retained on delete (dev) empties its buckets on `cdk destroy`: the artifact
            # bucket's fixed name is then free for the next deploy; prod retains both.
            auto_delete_objects=not stage.retain_on_delete,
        )
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(stage.log_retention_days))],
            encryption=s3.BucketEncryption.S3_MANAGED,  # S3 delivers access logs only to SSE-S3 buckets
            **common,
        )
        self.key = kms.Key(
            self,
            "ArtifactKey",
            description=f"TaskRouter {stage.name}: model artifacts (base weights, adapters, training jobs)",
            enable_key_rotation=True,
            removal_policy=stage.removal_policy,
        )
        self.bucket = s3.Bucket(
            self,
            "Artifacts",
            bucket_name=artifact_bucket_name(stage, self),
            versioned=True,  # an adapter overwritten by mistake can be restored
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,  # one data key per object batch, not a KMS call per object
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="artifacts/",
            **common,
        )
        self.base_weights = BaseWeights(self, "BaseWeights", stage=stage, bucket=self.bucket, key=self.key)
        self.training_role = self._training_role(stage)
        CfnOutput(self, "ArtifactBucketName", value=self.bucket.bucket_name)
        CfnOutput(self, "ArtifactKeyArn", value=self.key.key_arn)
        CfnOutput(self, "BaseWeightsS3Uri", value=self.base_weights.s3_uri)
        CfnOutput(self, "TrainingRoleArn", value=self.training_role.role_arn)
        self.adapter_archives = {manifest.name: self._archive(manifest) for manifest in manifests}

    def _training_role(self, stage: StageConfig) -> iam.Role:
        """What a training job of `taskrouter adapter launch` may do: read the base's weights and its
        own inputs, write its checkpoints and output under training/, with the artifact key; pull the
        training image; log and report metrics. The launcher passes it (iam:PassRole, the operator's)."""
        role = iam.Role(
            self,
            "TrainingRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"TaskRouter {stage.name}: SageMaker training jobs of routing adapters",
        )
        training = self.bucket.arn_for_objects(TRAINING_PREFIX + "*")
        role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[training, self.base_weights.objects_arn]
        ))
        role.add_to_policy(iam.PolicyStatement(
            actions=["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"], resources=[training]
        ))
        role.add_to_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [TRAINING_PREFIX + "*", self.base_weights.prefix + "*"]}},
        ))
        self.key.grant(role, "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey", "kms:CreateGrant")
        dlc = self.regional_fact(FactName.DLC_REPOSITORY_ACCOUNT)
        role.add_to_policy(iam.PolicyStatement(
            actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            resources=[self.format_arn(service="ecr", account=dlc, resource="repository",
                                       resource_name=TRAINING_IMAGE_REPOSITORY)],
        ))
        role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=[self.format_arn(service="logs", resource="log-group",
                                       resource_name="/aws/sagemaker/TrainingJobs:*",
                                       arn_format=ArnFormat.COLON_RESOURCE_NAME)],
        ))
        role.add_to_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}},
        ))
        bucket_arn = f"<{self.get_logical_id(self.bucket.node.default_child)}.Arn>"
        for prefix in (TRAINING_PREFIX, self.base_weights.prefix):
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{bucket_arn}/{prefix}*]",
                        "a folder of the artifact bucket: the jobs' own inputs, code, checkpoints and outputs "
                        "(training/), or the base's pinned revision; no other object")
        logs_arn = as_nag_shows(self, f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:/aws/sagemaker/TrainingJobs:*")
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{logs_arn}]",
                    "the log streams of SageMaker's training log group, one per job, named by SageMaker")
        acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no resource-level form: pulls are "
                    "limited to the one DLC repository, metric writes to SageMaker's training namespace by condition")
        return role

    def _archive(self, manifest: AdapterManifest) -> AdapterArchive:
        located = manifest.adapter.s3_bucket_and_key
        if located is not None:
            bucket, key = located
            return AdapterArchive(manifest.adapter.archive_s3_uri, f"arn:{self.partition}:s3:::{bucket}/{key}", None)
        archive = ROOT / manifest.adapter.archive_file
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        folder = ROOT / "build" / "adapter-assets" / digest  # the folder asset: the archive alone
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, folder / ADAPTER_ARCHIVE)
        prefix = f"adapters/{manifest.name}/{digest}/"
        upload = s3_deployment.BucketDeployment(
            self,
            f"AdapterArchive-{manifest.name}",
            sources=[s3_deployment.Source.asset(str(folder))],
            destination_bucket=self.bucket,
            destination_key_prefix=prefix,
            extract=True,
            prune=False,  # earlier versions stay: a rollback still finds its archive
            retain_on_delete=True,
        )
        self._acknowledge_deployment_handler()
        key = prefix + ADAPTER_ARCHIVE
        return AdapterArchive(self.bucket.s3_url_for_object(key), self.bucket.arn_for_objects(key), upload)

    def _acknowledge_deployment_handler(self) -> None:
        """The BucketDeployment's function (CDK's own, one a stack) copies archives at deploy time; its
        grants are CDK's: read on the CDK asset bucket, read and write on this stack's bucket."""
        bucket_id = self.resolve(self.get_logical_id(self.bucket.node.default_child))
        assets = f"arn:{self.regional_fact(FactName.PARTITION)}:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-{self.region}/*"
        iam5 = [f"Action::s3:{action}*" for action in ("GetBucket", "GetObject", "List", "Abort", "DeleteObject")]
        iam5 += ["Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"]  # the artifact key, for its writes
        iam5 += [f"Resource::{assets}", f"Resource::<{bucket_id}.Arn>/*"]
        findings = {
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]":
                "CDK's BucketDeployment handler logs with AWSLambdaBasicExecutionRole; it runs only during a deploy",
            **{
                f"AwsSolutions-IAM5[{finding}]": "CDK's BucketDeployment handler: read on the CDK asset bucket, read "
                "and write on this stack's artifact bucket, CDK's own grants; it runs only during a deploy"
                for finding in iam5
            },
            "AwsSolutions-L1": "CDK's BucketDeployment handler runtime is pinned by aws-cdk-lib and moves with it; "
            "it runs only during a deploy",
        }
        for child in self.node.children:
            if child.node.id.startswith("Custom::CDKBucketDeployment"):
                for finding, reason in findings.items():
                    acknowledge(child, finding, reason)
