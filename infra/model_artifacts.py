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
import math
import shutil
from dataclasses import dataclass

from aws_cdk import (
    ArnFormat,
    CfnOutput,
    Duration,
    Size,
    Stack,
    aws_iam as iam,
    aws_kms as kms,
    aws_s3 as s3,
    aws_s3_deployment as s3_deployment,
)
from aws_cdk.region_info import FactName
from constructs import Construct

from infra.base_weights import BaseWeights
from infra.config import ROOT, AdapterManifest, ConfigError, ServingSettings, StageConfig
from infra.nag import acknowledge, as_nag_shows

def artifact_bucket_name(stage: StageConfig, stack: Stack) -> str:
    """A name known before the bucket exists, so that the endpoint's role names the objects it may read
    without a reference to this stack's resources (at most 62 characters)."""
    return f"taskrouter-{stage.name}-models-{stack.account}-{stack.region}"


TRAINING_PREFIX = "training/"  # a training job's inputs, code, checkpoints and output
TRAINING_IMAGE_REPOSITORY = "pytorch-training"  # AWS's Deep Learning Containers

ADAPTER_ARCHIVE = "adapter.tar.gz"
MIB = 1024 * 1024


@dataclass(frozen=True)
class BaseShape:
    """What sizes a LoRA adapter of a base (its config.json): decoder layers, hidden size, MLP size, and
    the key/value projections' width (key/value heads x head dimension)."""

    layers: int
    hidden: int
    intermediate: int
    kv: int

    def adapter_bytes(self, rank: int, bytes_per_parameter: int = 4) -> int:
        """A LoRA adapter on every linear projection of every layer (`taskrouter adapter train`:
        target_modules "all-linear", which leaves lm_head out) adds A (rank x in) and B (out x rank) to
        each: rank x (in + out) parameters. Saved as float32: PEFT casts LoRA weights loaded in float16 or
        bfloat16 to float32 (get_peft_model's autocast_adapter_dtype, on by default), the CPU path trains
        in float32. gzip hardly shrinks float weights, and the config and safetensors header are
        kilobytes: the archive is that size."""
        h, i, kv = self.hidden, self.intermediate, self.kv
        per_layer = (h + h) + (h + kv) + (h + kv) + (h + h) + (h + i) + (h + i) + (i + h)  # q k v o gate up down
        return self.layers * per_layer * rank * bytes_per_parameter


# Qwen2.5-1.5B (config.json at the pinned revision): 28 layers, hidden 1536, intermediate 8960, 2 key/value
# heads of 128. Per layer and unit of rank: q 1536+1536 = 3,072; k and v 1536+256 = 1,792 each; o 3,072;
# gate and up 1536+8960 = 10,496 each; down 8960+1536 = 10,496: 41,216; x 28 layers = 1,154,048
# parameters. At rank 64 (serving.json's max_lora_rank): 73,859,072 parameters x 4 bytes = 295,436,288
# bytes, ~282 MiB; at vLLM's largest rank, 512: ~2.2 GiB.
BASE_SHAPES = {
    "Qwen/Qwen2.5-1.5B-Instruct": BaseShape(layers=28, hidden=1536, intermediate=8960, kv=2 * 128),
}
DEPLOYMENT_MEMORY_MIB = 1024
DEPLOYMENT_STORAGE_STEP_MIB = 512


def deployment_storage_mib(stage: StageConfig, serving: ServingSettings) -> int:
    """/tmp of the BucketDeployment that ships an archive: its handler (aws-cdk-lib's
    bucket-deployment-handler, s3_deploy) copies the asset's zip into /tmp and extracts it there before
    `aws s3 sync`, so the zip (a .tar.gz does not deflate: ~its size) and the archive lie side by side:
    twice the largest archive the stage serves (its max_lora_rank), a quarter more for headroom, in
    steps of 512 MiB (Lambda's default and minimum) up to Lambda's 10,240 MiB."""
    shape = BASE_SHAPES.get(stage.base_model.id)
    if shape is None:
        raise ConfigError(
            f"stage {stage.name}: no adapter size is known for {stage.base_model.id}: add its shapes to "
            "infra/model_artifacts.py BASE_SHAPES (layers, hidden and intermediate sizes, key/value width)"
        )
    needed = 2 * shape.adapter_bytes(serving.max_lora_rank) * 1.25 / MIB
    return min(10_240, math.ceil(needed / DEPLOYMENT_STORAGE_STEP_MIB) * DEPLOYMENT_STORAGE_STEP_MIB)


@dataclass(frozen=True)
class AdapterArchive:
    url: str  # the adapter's ArtifactUrl
    object_arn: str  # the one object the endpoint reads
    upload: Construct | None  # what puts it in the bucket (None: a training job did)


class ModelArtifactsStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        manifests: list[AdapterManifest],
        serving: ServingSettings,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self._stage = stage
        self._serving = serving
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
        storage_mib = deployment_storage_mib(self._stage, self._serving)
        if 2 * archive.stat().st_size > storage_mib * MIB:
            raise ConfigError(
                f"{manifest.name}: {manifest.adapter.archive_file} ({archive.stat().st_size // MIB} MiB) does not fit twice "
                f"in the adapter deployment's /tmp ({storage_mib} MiB, sized for a rank-{self._serving.max_lora_rank} "
                f"adapter of {self._stage.base_model.id}): does it carry more than the LoRA weights?"
            )
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
            # Sized for the largest archive the stage serves (deployment_storage_mib); memory explicit, as
            # aws-cdk-lib's default has moved between versions (its README, "Size Limits").
            memory_limit=DEPLOYMENT_MEMORY_MIB,
            ephemeral_storage_size=Size.mebibytes(storage_mib),
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
