"""The CDK app: every stage of stages.toml, checked by cdk-nag's AwsSolutions pack at synth."""

from __future__ import annotations

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import StageConfig, load_stages
from infra.stage import TaskRouterStage


# Feature flags set here rather than in cdk.json, so tests build exactly what `cdk synth` builds.
FEATURE_FLAGS = {
    # Access-log delivery through a bucket policy, not an ACL (ACLs stay disabled everywhere).
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
    # A resource type missing from the stage's region (e.g. inference components) fails synth.
    "@aws-cdk/core:validateAgainstDefaultRules": True,
}


def build_app(stages: dict[str, StageConfig] | None = None, *, outdir: str | None = None) -> App:
    app = App(context=FEATURE_FLAGS, outdir=outdir)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    for config in (stages or load_stages()).values():
        TaskRouterStage(app, config)
    return app
