"""One synthesized app for the whole session: synth is the slow part of every infrastructure test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from aws_cdk.assertions import Template

from infra.app import build_app
from infra.config import StageConfig, load_stages
from infra.stage import TaskRouterStage

STAGES = load_stages()
# Every stage's stacks; Capture only where the stage captures (infra/stage.py).
STACKS = ("Registry", "ModelArtifacts", "Operations", "ModelHosting", "Api", "Monitoring")


def stacks_of(config: StageConfig) -> tuple[str, ...]:
    return STACKS + (("Capture",) if config.capture.measures else ())


@dataclass(frozen=True)
class SynthesizedStage:
    config: StageConfig
    templates: dict[str, dict]  # stack id ("Registry", "Api", ...) -> template
    template_files: dict[str, Path]
    dependencies: dict[str, set[str]]  # stack id -> the stack ids it deploys after

    def template(self, stack_id: str) -> Template:
        return Template.from_json(self.templates[stack_id])


@dataclass(frozen=True)
class SynthesizedApp:
    outdir: Path
    stages: dict[str, SynthesizedStage]


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedApp:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = build_app(STAGES, outdir=str(outdir))
    app.synth()
    stages = {}
    for child in app.node.children:
        if isinstance(child, TaskRouterStage):
            assembly = child.synth()
            stacks = {stack.hierarchical_id.split("/")[-1]: stack for stack in assembly.stacks}
            stages[child.stage_name] = SynthesizedStage(
                config=STAGES[child.stage_name],
                templates={name: stack.template for name, stack in stacks.items()},
                template_files={name: Path(assembly.directory) / stack.template_file for name, stack in stacks.items()},
                dependencies={
                    name: {d.hierarchical_id.split("/")[-1] for d in stack.dependencies if "/" in d.hierarchical_id}
                    for name, stack in stacks.items()
                },
            )
    return SynthesizedApp(outdir=outdir, stages=stages)


@pytest.fixture(params=sorted(STAGES))
def stage(request: pytest.FixtureRequest, synthesized: SynthesizedApp) -> SynthesizedStage:
    return synthesized.stages[request.param]
