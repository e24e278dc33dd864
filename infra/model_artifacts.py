"""The stage's model artifact bucket (adapters), stateful and kept apart from the endpoint."""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Stack, aws_s3 as s3
from constructs import Construct

from infra.config import StageConfig


class ModelArtifactsStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, **kwargs) -> None:
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
