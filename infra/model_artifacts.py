"""The stage's model artifact bucket, stateful and kept apart from the endpoint, and the adapter
archives `cdk deploy` ships into it.

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

from aws_cdk import CfnOutput, Duration, Stack, aws_s3 as s3, aws_s3_deployment as s3_deployment
from aws_cdk.region_info import FactName
from constructs import Construct

from infra.config import ROOT, AdapterManifest, StageConfig
from infra.nag import acknowledge

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
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=stage.removal_policy,
            auto_delete_objects=False,
        )
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(stage.log_retention_days))],
            **common,
        )
        self.bucket = s3.Bucket(
            self,
            "Artifacts",
            versioned=True,  # an adapter overwritten by mistake can be restored
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="artifacts/",
            **common,
        )
        CfnOutput(self, "ArtifactBucketName", value=self.bucket.bucket_name)
        self.adapter_archives = {manifest.name: self._archive(manifest) for manifest in manifests}

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
