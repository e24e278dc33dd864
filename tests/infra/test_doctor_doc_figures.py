"""Every figure docs/doctor.md states, derived here, never written by hand: the stages' needs (its table
"What each stage needs") from their synthesized templates (the session's `synthesized` app) and from
what the doctor computes of them (doctor/needs.py, doctor/quotas.py), and the doctor's own constants
its prose names. A template that changes (the teacher, scaling) without the doc fails here."""

from __future__ import annotations

import re
from typing import Any

import pytest

from taskrouter.doctor import needs, quotas
from taskrouter.doctor.assembly import DEFAULT_BOOTSTRAP_PARAMETER, StageAssembly, read_assembly
from taskrouter.doctor.aws import RETRIES
from taskrouter.doctor.stage import load_stage
from taskrouter.repository import ROOT
from tests.infra.conftest import STAGES

DOC = ROOT / "docs" / "doctor.md"
TABLE = "## What each stage needs"
_PROVISIONED_DIMENSION = "lambda:function:ProvisionedConcurrency"


def _table() -> dict[str, dict[str, str]]:
    """The table's rows: its first cell -> {stage: cell}."""
    section = DOC.read_text().split(TABLE, 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|")]
    stages = rows[0][1:]
    return {row[0]: dict(zip(stages, row[1:], strict=True)) for row in rows[2:]}


def _cell(row: str, stage: str, pattern: str) -> re.Match[str]:
    cell = _table()[row][stage]
    match = re.fullmatch(pattern, cell)
    assert match, f"docs/doctor.md, {row!r} of {stage}: {cell!r} is not of the form {pattern!r}"
    return match


def _assembly(synthesized, stage: str) -> StageAssembly:
    return read_assembly(stage, STAGES[stage].region, synthesized.outdir, inputs=[])


def _resources(synthesized, stage: str, resource_type: str) -> dict[str, dict[str, Any]]:
    """Every resource of a type in the stage's templates, by logical id, read straight from them."""
    return {
        logical_id: resource.get("Properties", {})
        for template in synthesized.stages[stage].templates.values()
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == resource_type
    }


def test_the_table_has_a_column_for_each_committed_stage():
    assert {stage for row in _table().values() for stage in row} == set(STAGES)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_lambda_concurrency_each_stage_reserves(synthesized, stage):
    match = _cell("Lambda concurrency the stage reserves", stage, r"(?P<total>\d+) \((?P<parts>[^()]+)\)")
    stated = [(label, int(count)) for label, count in
              (part.rsplit(" ", 1) for part in match["parts"].split(", "))]
    functions = needs.lambda_concurrency(_assembly(synthesized, stage))
    # As the doctor's line says it: each function in the order of the stage's stacks, then the sum.
    assert stated == [(function.label, function.takes) for function in functions]
    assert int(match["total"]) == sum(function.takes for function in functions)
    # What the doctor reads is every reservation the templates hold, and nothing else.
    reserved = {logical_id: properties["ReservedConcurrentExecutions"]
                for logical_id, properties in _resources(synthesized, stage, "AWS::Lambda::Function").items()
                if "ReservedConcurrentExecutions" in properties}
    assert reserved == {function.logical_id: function.reserved for function in functions if function.reserved is not None}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_provisioned_concurrency_each_stage_keeps_warm(synthesized, stage):
    stated = int(_cell("of it, provisioned (warm)", stage, r"\d+")[0])
    aliases = [properties["ProvisionedConcurrencyConfig"]["ProvisionedConcurrentExecutions"]
               for properties in _resources(synthesized, stage, "AWS::Lambda::Alias").values()
               if "ProvisionedConcurrencyConfig" in properties]
    scaled = [properties["MaxCapacity"]
              for properties in _resources(synthesized, stage, "AWS::ApplicationAutoScaling::ScalableTarget").values()
              if properties.get("ScalableDimension") == _PROVISIONED_DIMENSION]
    functions = needs.lambda_concurrency(_assembly(synthesized, stage))
    assert stated == sum(aliases) + sum(scaled) == sum(function.provisioned for function in functions)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_endpoint_instances_each_stage_needs(synthesized, stage):
    match = _cell("SageMaker endpoint instances", stage, r'(?P<most>\d+) of "(?P<quota>[^"]+)" \((?P<deploy>\d+) at deploy\)')
    (endpoint,) = needs.endpoint_instances(_assembly(synthesized, stage))
    assert match["quota"] == quotas.endpoint_quota(endpoint.instance_type)
    assert (int(match["deploy"]), int(match["most"])) == (endpoint.at_deploy, endpoint.at_most)
    (config,) = _resources(synthesized, stage, "AWS::SageMaker::EndpointConfig").values()
    (variant,) = config["ProductionVariants"]
    assert variant["InstanceType"] == endpoint.instance_type
    assert variant["InitialInstanceCount"] == endpoint.at_deploy
    assert variant["ManagedInstanceScaling"]["MaxInstanceCount"] == endpoint.at_most


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_training_instances_each_stage_needs(stage):
    match = _cell("SageMaker training instances", stage, r'(?P<count>\d+) of "(?P<quota>[^"]+)"')
    training = load_stage(stage).training  # what the doctor reads: infra/stages.toml, not a template
    assert training is not None
    assert (int(match["count"]), match["quota"]) == (quotas.TRAINING_INSTANCES, quotas.training_quota(training))
    assert (training.instance_type, training.spot) == (STAGES[stage].training.instance_type, STAGES[stage].training.spot)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_codebuild_environment_of_each_stage(synthesized, stage):
    environments = needs.build_environments(_assembly(synthesized, stage))
    assert _table()["CodeBuild environment"][stage] == " and ".join(environment.label for environment in environments)
    in_templates = {(properties["Environment"]["Type"], properties["Environment"]["ComputeType"])
                    for properties in _resources(synthesized, stage, "AWS::CodeBuild::Project").values()}
    assert in_templates == {(environment.environment_type, environment.compute_type) for environment in environments}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_bootstrap_version_each_stage_needs(synthesized, stage):
    stated = int(_cell("CDK bootstrap version", stage, r"(\d+) or later")[1])
    assert stated == _assembly(synthesized, stage).bootstrap_version_needed
    # CDK's rule in every template refuses the versions it lists: the first it accepts is one more.
    refused = {int(version)
               for template in synthesized.stages[stage].templates.values()
               for assertion in template["Rules"]["CheckBootstrapVersion"]["Assertions"]
               for version in assertion["Assert"]["Fn::Not"][0]["Fn::Contains"][0]}
    assert stated >= max(refused) + 1


def test_the_prose_states_no_figure_of_a_stage_outside_the_table():
    """Figures of a stage written in the prose would escape the checks above."""
    text = DOC.read_text()
    section_start = text.index(TABLE)
    prose = text[:section_start] + text[section_start:].split("\n## ", 1)[1]
    stray = re.findall(r"[^\n]*\b(?:dev|prod)\b\W{0,3}\d[^\n]*|[^\n]*\b[Tt]oday:[^\n]*", prose)
    assert not stray, stray


def test_the_doctors_constants_the_prose_names():
    text = " ".join(DOC.read_text().split())
    assert f"Lambda keeps {quotas.UNRESERVED_FLOOR} executions of the account's concurrency unreserved" in text
    assert f"no less than the usual {quotas.DEFAULT_LAMBDA_CONCURRENCY:,}" in text
    assert f"--quota-code {quotas.LAMBDA_CONCURRENCY_QUOTA}" in text
    assert f"the newest {quotas.BUILDS_LOOKED_AT}, kept a year" in text
    assert f"(standard mode, {RETRIES.retries['total_max_attempts']} attempts)" in text
    assert f"parameter `{DEFAULT_BOOTSTRAP_PARAMETER}`" in text
