"""The CDK app: every stage of stages.toml, checked by cdk-nag's AwsSolutions pack at synth."""

from __future__ import annotations

import json

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import ROOT, StageConfig, load_stages
from infra.stage import TaskRouterStage

# The feature flags of cdk.json (CDK's recommended set, plus bucket-policy access logs and region
# validation of resource types): loaded here too, so tests build exactly what `cdk synth` builds.
FEATURE_FLAGS = json.loads((ROOT / "cdk.json").read_text())["context"]


def build_app(stages: dict[str, StageConfig] | None = None, *, outdir: str | None = None) -> App:
    app = App(context=FEATURE_FLAGS, outdir=outdir)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    for config in (stages or load_stages()).values():
        TaskRouterStage(app, config)
    return app
