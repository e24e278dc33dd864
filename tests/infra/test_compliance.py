"""cdk-nag (AwsSolutions) and cfn-lint over everything both stages synthesize."""

from __future__ import annotations

import json

import pytest

from aws_cdk import Stack, aws_sns as sns
from cfnlint.api import ManualArgs, lint_file

from infra.app import build_app
from infra.config import load_stages
from infra.nag import unacknowledged_findings

STAGES = load_stages()

# Every finding accepted on purpose, per stage; a new one must be added here, in review.
EXPECTED_ACKNOWLEDGEMENTS = {
    "Api/Api/CloudWatchRole": {
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]"
    },
    "Api/Api/DeploymentStage.v1": {"AwsSolutions-APIG3"},
    "Api/Api/Default/route/POST": {"AwsSolutions-APIG4", "AwsSolutions-COG4"},
    "Operations/OpenAIApiKey": {"AwsSolutions-SMG4"},
    "Api/RouterRole": {"AwsSolutions-IAM5[Resource::*]"},
    "Api/Router": {"AwsSolutions-L1"},
    "Api/RegistryRole": {"AwsSolutions-IAM5[Resource::*]"},
    "Api/Registry": {"AwsSolutions-L1"},
    "Api/Api/Default/tasks/GET": {"AwsSolutions-APIG4", "AwsSolutions-COG4"},
    "Api/Api/Default/tasks/{name}/GET": {"AwsSolutions-APIG4", "AwsSolutions-COG4"},
    "Api/Api/Default/tasks/{name}/PUT": {"AwsSolutions-COG4"},
    "Api/Api/Default/tasks/{name}/DELETE": {"AwsSolutions-COG4"},
    "Api/DefaultTasks/SeedRole": {"AwsSolutions-IAM5[Resource::*]"},
    "Api/DefaultTasks/Seed": {"AwsSolutions-L1"},
    "Api/DefaultTasks/Provider": {
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        "AwsSolutions-L1",
        "AwsSolutions-IAM5[Resource::<DefaultTasksSeedBB8F0EA5.Arn>:*]",
    },
    "Monitoring/AlarmHandler": {"AwsSolutions-L1"},
    "ModelHosting/ExecutionRole": {
        "AwsSolutions-IAM5[Resource::*]",
        "AwsSolutions-IAM5[Resource::arn:aws:s3:::taskrouter-{stage}-models-<AWS::AccountId>-{region}/base/{base}/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:logs:{region}:<AWS::AccountId>:log-group:/aws/sagemaker/InferenceComponents/taskrouter-{stage}-*]",
    },
    "ModelArtifacts/TrainingRole": {
        "AwsSolutions-IAM5[Resource::*]",
        "AwsSolutions-IAM5[Resource::<Artifacts82DD59A1.Arn>/training/*]",
        "AwsSolutions-IAM5[Resource::<Artifacts82DD59A1.Arn>/base/{base}/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:logs:{region}:<AWS::AccountId>:log-group:/aws/sagemaker/TrainingJobs:*]",
    },
    # the base weights' staging (infra/base_weights.py): CodeBuild's and CDK's Provider framework's own grants
    "ModelArtifacts/BaseWeights/Copy": {
        "AwsSolutions-IAM5[Resource::arn:aws:logs:{region}:<AWS::AccountId>:log-group:/aws/codebuild/<BaseWeightsCopyAD1F34E7>:*]",
        "AwsSolutions-IAM5[Resource::arn:aws:codebuild:{region}:<AWS::AccountId>:report-group/<BaseWeightsCopyAD1F34E7>-*]",
        "AwsSolutions-IAM5[Resource::<Artifacts82DD59A1.Arn>/base/{base}/*]",
        "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
        "AwsSolutions-IAM5[Action::kms:ReEncrypt*]",
    },
    **{
        f"ModelArtifacts/BaseWeights/{handler}": {
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "AwsSolutions-L1",
        }
        for handler in ("Start", "Check")
    },
    "ModelArtifacts/BaseWeights/Provider": {
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        "AwsSolutions-L1",
        "AwsSolutions-SF1",
        "AwsSolutions-SF2",
        *(f"AwsSolutions-IAM5[Resource::<{function}.Arn>:*]" for function in (
            "BaseWeightsStart69963992", "BaseWeightsCheck08561959", "BaseWeightsProviderframeworkisCompleteEBF5E9E9",
            "BaseWeightsProviderframeworkonTimeout3C9DEBE6",
        )),
    },
}
# Only in a stage whose router deploys by canary (stages.toml, router_concurrency.canary): CodeDeploy's
# service role of each deployment group (infra/api.py), with the AWS managed policy CDK attaches to it.
CANARY_ACKNOWLEDGEMENTS = {
    f"Api/{function}Deployment/ServiceRole": {
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited]"
    }
    for function in ("Router", "Registry")
}

# In a stage that measures (capture.share over 0): the teacher function and its deliveries table
# (infra/capture.py).
TEACHER_ACKNOWLEDGEMENTS = {"Capture/Teacher": {"AwsSolutions-L1"}, "Capture/Deliveries": {"AwsSolutions-DDB3"}}
# Only in a stage that stores records (stages.toml, capture.enabled): the teacher writes them under one
# prefix of the capture bucket, and analysts read them.
CAPTURE_ACKNOWLEDGEMENTS = {
    "Capture/TeacherRole": {"AwsSolutions-IAM5[Resource::<Captured45005CB0.Arn>/records/*]",
                            "AwsSolutions-IAM5[Resource::<Captured45005CB0.Arn>/aws/lambda/async/*]"},
    "Capture/AnalystPolicy": {"AwsSolutions-IAM5[Resource::*]",
                              "AwsSolutions-IAM5[Resource::<Captured45005CB0.Arn>/records/*]",
                              "AwsSolutions-IAM5[Resource::<Captured45005CB0.Arn>/athena-results/*]"},
}


def _acknowledgements(outdir):
    found: dict[str, dict[str, str]] = {}
    for metadata_file in outdir.glob("assembly-*/*.metadata.json"):
        for path, entries in json.loads(metadata_file.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    found.setdefault(path, {}).update(entry["data"])
    return found


def test_cdk_nag_leaves_no_unacknowledged_finding(synthesized):
    assert unacknowledged_findings(synthesized.outdir / "validation-report.json") == []


def test_the_nag_pack_reports_an_unacknowledged_finding(tmp_path):
    app = build_app({}, outdir=str(tmp_path))
    stack = Stack(app, "Probe")
    sns.Topic(stack, "PlainTopic")  # no encryption, no SSL enforcement
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()  # synth itself stops on an unacknowledged finding
    findings = unacknowledged_findings(tmp_path / "validation-report.json")
    assert "AwsSolutions-SNS3 at Probe/PlainTopic/Resource" in findings, findings


def test_each_acknowledgement_is_expected_and_gives_its_reason(synthesized):
    found = _acknowledgements(synthesized.outdir)
    for stage in ("dev", "prod"):
        in_stage = {
            path.removeprefix(f"/{stage}/"): rules for path, rules in found.items() if path.startswith(f"/{stage}/")
        }
        config = STAGES[stage]
        names = {"{stage}": stage, "{region}": config.region, "{base}": f"{config.base_model.id}/{config.base_model.revision}"}
        expected_here = (
            EXPECTED_ACKNOWLEDGEMENTS
            | (CANARY_ACKNOWLEDGEMENTS if config.router_concurrency.canary != "off" else {})
            | (TEACHER_ACKNOWLEDGEMENTS if config.capture.measures else {})
            | (CAPTURE_ACKNOWLEDGEMENTS if config.capture.stores_records else {})
        )
        expected = {path: {_fill(rule, names) for rule in rules} for path, rules in expected_here.items()}
        assert {path: {rule.removeprefix("Annotation::") for rule in rules} for path, rules in in_stage.items()} == expected
        for rules in in_stage.values():
            for rule, reason in rules.items():
                assert len(reason) >= 50, f"{rule}: the reason must say why, specifically"


def _fill(rule: str, names: dict[str, str]) -> str:
    for placeholder, value in names.items():
        rule = rule.replace(placeholder, value)
    return rule


def test_cfn_lint_reports_no_error_in_the_stage_region(stage):
    for stack_id, template_file in stage.template_files.items():
        matches = lint_file(template_file, config=ManualArgs(regions=[stage.config.region]))
        errors = [str(match) for match in matches if match.rule.severity == "error"]
        assert errors == [], f"{stack_id}: {errors}"
