"""`taskrouter doctor --stage STAGE` against moto and botocore answers (tests/integration/doctor_account.py):
one line per check, its fix where something blocks, and the exit status (0 ok, 1 blocks, 2 unchecked)."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from taskrouter.cli import main
from taskrouter.doctor import cli as doctor_cli
from taskrouter.doctor import stage as doctor_stage
from taskrouter.doctor.aws import RETRIES, Aws
from tests.integration.doctor_account import (
    CALLS,
    ENDPOINT_QUOTA,
    REAL_EMAIL,
    SPOT_QUOTA,
    FakeAccount,
    bootstrap,
    deploy_stage,
    quota_code,
    ran_a_build,
    write_assembly,
    write_stages,
)
from tests.integration.foreign_endpoint import HTML_200, KINDS, ForeignEndpoint, foreign

REGION = "us-east-1"  # dev's, in infra/stages.toml
ACCOUNT = "123456789012"  # moto's


@pytest.fixture
def fake(monkeypatch, tmp_path, fake_aws_credentials) -> FakeAccount:
    """A ready account: bootstrapped, quotas enough, a CodeBuild build in its history; dev's alarm
    e-mail a real address; the stage synthesized (cdk.out) and not deployed."""
    account = FakeAccount()
    monkeypatch.setattr(doctor_cli, "aws_session", account.session)
    monkeypatch.setattr(doctor_stage, "STAGES_FILE", write_stages(tmp_path / "stages.toml", emails=[REAL_EMAIL]))
    write_assembly(tmp_path / "cdk.out", "dev", REGION)
    with mock_aws():
        bootstrap(REGION)
        ran_a_build(REGION)
        yield account


def doctor(tmp_path: Path, capsys, stage: str = "dev") -> tuple[int, dict[str, str]]:
    """The exit status and each check's line, by check name."""
    status = main(["doctor", "--stage", stage, "--cdk-out", str(tmp_path / "cdk.out")])
    lines = capsys.readouterr().out.splitlines()
    by_check = {line.split(": ")[1]: line for line in lines}
    assert len(by_check) == len(lines), lines  # one line per check
    return status, by_check


def test_a_ready_account_is_all_ok_before_a_deploy(fake, tmp_path, capsys):
    status, lines = doctor(tmp_path, capsys)
    assert status == 0, "\n".join(lines.values())
    assert lines["credentials"] == f"ok: credentials: account {ACCOUNT} as arn:aws:sts::{ACCOUNT}:user/moto"
    assert lines["bootstrap"] == "ok: bootstrap: CDKToolkit in us-east-1 at version 30 (the stage needs 6 or later)"
    assert lines["region"].startswith("ok: region: CloudFormation in us-east-1 has all ")
    assert lines["lambda concurrency"].startswith(
        "ok: lambda concurrency: the stage reserves 22 (teacher 1, router 20, alarm handler 1) of the account's 1000 in "
        "us-east-1; 978 stay unreserved")
    assert lines["endpoint instances"].startswith(f"ok: endpoint instances: '{ENDPOINT_QUOTA}' is 4 in us-east-1; the stage needs 3")
    assert lines["training instances"].startswith(f"ok: training instances: '{SPOT_QUOTA}' is 2")
    assert lines["codebuild"].startswith("ok: codebuild: the account ran earlier:")
    assert lines["alarm e-mails"] == "ok: alarm e-mails: 1 in [dev] of infra/stages.toml"
    assert lines["openai secret"] == "skipped: openai secret: not deployed (no stack dev-Operations in us-east-1)"
    assert lines["alarm subscriptions"] == "skipped: alarm subscriptions: not deployed (no stack dev-Monitoring in us-east-1)"
    assert lines["unseen tasks"] == "skipped: unseen tasks: not deployed (no stack dev-Api in us-east-1)"
    assert lines["quality sampling"] == DEV_SAMPLING
    assert list(lines) == ["credentials", "bootstrap", "region", "lambda concurrency", "endpoint instances",
                           "training instances", "codebuild", "alarm e-mails", "openai secret", "alarm subscriptions",
                           "unseen tasks", "quality sampling"]


# What the stage sends out of AWS, and how to stop it: a note, never blocking (docs/doctor.md).
DEV_SAMPLING = (
    "note: quality sampling: the router sends a redacted sample of the turns the primary answered (a share of 0.2; of "
    "the rest, a share of 1 of those with tasks the serving adapter was not trained on) to OpenAI (gpt-4.1-mini) for "
    "the teacher to label: turns that would otherwise not leave AWS; their records, labelled, are kept in the stage's "
    "capture bucket. To stop it with no deploy, within a minute: aws ssm put-parameter --region us-east-1 --name "
    "/taskrouter/dev/capture --value off --overwrite (--value on resumes it); for good: capture.share = 0 with "
    "capture.enabled = false in [dev] of infra/stages.toml, then `npx cdk deploy 'dev/*'`"
)


def test_a_new_accounts_lambda_concurrency_of_10_blocks_with_the_quota_request(fake, tmp_path, capsys):
    fake.concurrency = 10
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert lines["lambda concurrency"] == (
        "blocks: lambda concurrency: the account may run 10 concurrent executions in us-east-1; the stage reserves 22 "
        "(teacher 1, router 20, alarm handler 1) and Lambda keeps 100 unreserved, so it needs at least 122 (the deploy "
        "would fail: "
        "\"decreases account's UnreservedConcurrentExecution below its minimum value\"). Fix: aws service-quotas "
        "request-service-quota-increase --service-code lambda --quota-code L-B99A9384 --desired-value 1000 --region us-east-1"
    )


def test_what_other_functions_reserve_counts(fake, tmp_path, capsys):
    fake.concurrency, fake.reserved = 1000, 890
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert "other functions reserve 890" in lines["lambda concurrency"]
    assert "it needs at least 1012" in lines["lambda concurrency"] and "--desired-value 1012" in lines["lambda concurrency"]


def test_a_deployed_stages_own_reservation_is_not_counted_twice(fake, tmp_path, capsys):
    # 640 in all, 500 reserved by others and 20 by the deployed router: 120 unreserved now. After the
    # deploy the stage holds 22 (20 of them already), so 118 stay unreserved: enough.
    deploy_stage("dev", REGION, [REAL_EMAIL], secret_set=True, router_reserved=20)
    fake.concurrency, fake.reserved = 640, 520
    status, lines = doctor(tmp_path, capsys)
    assert lines["lambda concurrency"].startswith("ok: lambda concurrency: the stage reserves 22")
    assert "other functions reserve 500; 118 stay unreserved" in lines["lambda concurrency"]
    assert "lambda:GetFunctionConcurrency" in fake.asked


def test_prods_provisioned_concurrency_counts_within_its_reservation(fake, monkeypatch, tmp_path, capsys):
    write_assembly(tmp_path / "prod-out", "prod", "eu-west-1", templates_of="prod")
    monkeypatch.setattr(doctor_stage, "STAGES_FILE", doctor_stage.ROOT / "infra" / "stages.toml")  # as committed
    bootstrap("eu-west-1")
    status = main(["doctor", "--stage", "prod", "--cdk-out", str(tmp_path / "prod-out")])
    out = capsys.readouterr().out
    assert ("ok: lambda concurrency: the stage reserves 202 (teacher 1, router 200, alarm handler 1) of the account's "
            "1000 in eu-west-1") in out  # prod measures too: its teacher's one
    assert ("note: quality sampling: the router sends a redacted sample of the turns the primary answered (a share of "
            "0.02) to OpenAI (gpt-4.1-mini) for the teacher to label: turns that would otherwise not leave AWS; no record "
            "is kept. To stop it with no deploy, within a minute: aws ssm put-parameter --region eu-west-1 --name "
            "/taskrouter/prod/capture --value off --overwrite") in out
    assert f"blocks: endpoint instances: '{ENDPOINT_QUOTA}' is 4 in eu-west-1; the stage needs 7" in out
    assert "taskrouter-oncall@example.com in alarm_emails of [prod] of infra/stages.toml reach no one" in out
    assert status == 1


def test_a_gpu_quota_of_0_blocks_with_the_request_naming_its_code(fake, tmp_path, capsys):
    fake.applied_quotas = {SPOT_QUOTA: 1}
    fake.default_quotas = {ENDPOINT_QUOTA: 0}  # never changed: listed with its default only
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert lines["endpoint instances"] == (
        f"blocks: endpoint instances: '{ENDPOINT_QUOTA}' is 0 in us-east-1; the stage needs 3 (1 at deploy, up to 3 while "
        "scaling or rolling out). Fix: aws service-quotas request-service-quota-increase --service-code sagemaker "
        f"--quota-code {quota_code(ENDPOINT_QUOTA)} --desired-value 3 --region us-east-1 (or the Service Quotas console: "
        f"Amazon SageMaker, '{ENDPOINT_QUOTA}'); an increase can take a day"
    )
    assert lines["training instances"].startswith("ok: training instances:")


def test_an_instance_type_the_region_lacks_is_named(fake, tmp_path, capsys):
    fake.applied_quotas = {}
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert lines["endpoint instances"] == (
        f"blocks: endpoint instances: Service Quotas has no '{ENDPOINT_QUOTA}' in us-east-1: SageMaker offers no such "
        "instances there. Fix: choose another gpu_instance_type or region in [dev] of infra/stages.toml"
    )
    assert lines["training instances"].startswith(f"blocks: training instances: Service Quotas has no '{SPOT_QUOTA}'")


def test_an_account_never_bootstrapped_blocks_with_the_bootstrap_command(fake, tmp_path, capsys):
    boto3.client("cloudformation", region_name=REGION).delete_stack(StackName="CDKToolkit")
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert lines["bootstrap"] == (
        f"blocks: bootstrap: us-east-1 of account {ACCOUNT} is not bootstrapped (no stack CDKToolkit). "
        f"Fix: npx cdk bootstrap aws://{ACCOUNT}/us-east-1"
    )


def test_a_bootstrap_older_than_the_templates_need_blocks(fake, tmp_path, capsys):
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/cdk-bootstrap/hnb659fds/version", Value="5", Type="String", Overwrite=True)
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert lines["bootstrap"] == (
        "blocks: bootstrap: CDKToolkit in us-east-1 is at version 5, the stage's templates need 6 or later. "
        f"Fix: npx cdk bootstrap aws://{ACCOUNT}/us-east-1"
    )


def test_no_credentials_is_one_line_with_its_fix(monkeypatch, tmp_path, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert lines == {"credentials": "blocks: credentials: no AWS credentials found. Fix: set AWS_PROFILE (a profile of "
                                    "~/.aws/config) or run `aws configure`",
                     "quality sampling": DEV_SAMPLING}  # said whatever the account: it reads the stage's settings


def test_credentials_of_another_account_than_the_stages_block(fake, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(doctor_stage, "STAGES_FILE", write_stages(tmp_path / "other.toml", emails=[REAL_EMAIL],
                                                                  account="210987654321"))
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert lines == {"credentials": f"blocks: credentials: the credentials are of account {ACCOUNT}, [dev] of "
                                    "infra/stages.toml deploys to 210987654321. Fix: set AWS_PROFILE to a profile of "
                                    "account 210987654321",
                     "quality sampling": DEV_SAMPLING}


def test_a_region_without_inference_components_blocks(fake, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(doctor_stage, "STAGES_FILE", write_stages(tmp_path / "paris.toml", emails=[REAL_EMAIL],
                                                                  region="eu-west-3"))
    write_assembly(tmp_path / "paris-out", "dev", "eu-west-3")
    bootstrap("eu-west-3")
    fake.absent_types = {"AWS::SageMaker::InferenceComponent"}
    status = main(["doctor", "--stage", "dev", "--cdk-out", str(tmp_path / "paris-out")])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert (
        "blocks: region: CloudFormation in eu-west-3 has no AWS::SageMaker::InferenceComponent (TypeNotFoundException), "
        "which the stage uses. Fix: set region in [dev] of infra/stages.toml to one that has them (`aws cloudformation "
        "describe-type --type RESOURCE --type-name AWS::SageMaker::InferenceComponent --region REGION` answers there), "
        "then `make synth`"
    ) in lines
    assert fake.asked.count("cloudformation:DescribeType") > 30  # every resource type of the stage


def test_the_committed_placeholder_alarm_email_blocks(fake, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(doctor_stage, "STAGES_FILE", write_stages(tmp_path / "committed.toml"))
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert lines["alarm e-mails"] == (
        "blocks: alarm e-mails: taskrouter-dev-alarms@example.com in alarm_emails of [dev] of infra/stages.toml reach "
        "no one. Fix: put your addresses there, then `npx cdk deploy 'dev/*'`"
    )


def test_after_a_deploy_the_secret_and_confirmed_subscriptions_are_ok(fake, tmp_path, capsys):
    deploy_stage("dev", REGION, [REAL_EMAIL], secret_set=True)
    fake.reserved = 22
    status, lines = doctor(tmp_path, capsys)
    assert status == 0, "\n".join(lines.values())
    assert lines["openai secret"].startswith("ok: openai secret: set (last changed ")
    assert lines["alarm subscriptions"] == "ok: alarm subscriptions: 1 confirmed on the alarm topic"
    assert lines["unseen tasks"].startswith(
        "ok: unseen tasks: adapter sales-router-v2 never saw 2 of the 4 live tasks: book_a_demo, renewal_reminder"
    )
    assert "secretsmanager:GetSecretValue" not in fake.asked  # the key itself is never read


def test_after_a_deploy_an_unset_secret_and_a_pending_subscription_block(fake, tmp_path, capsys):
    made = deploy_stage("dev", REGION, [REAL_EMAIL], secret_set=False)
    fake.pending = {REAL_EMAIL}
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert lines["openai secret"] == (
        "blocks: openai secret: it still holds the random value CloudFormation generated: the fallback cannot call "
        f"OpenAI. Fix: aws secretsmanager put-secret-value --region us-east-1 --secret-id {made['secret']} "
        "--secret-string \"sk-...\""
    )
    assert lines["alarm subscriptions"] == (
        f"blocks: alarm subscriptions: {REAL_EMAIL} never confirmed the subscription: no alarm reaches them. Fix: click "
        "the link of the e-mail \"AWS Notification - Subscription Confirmation\" (check the spam folder); to send it "
        f"again: aws sns subscribe --topic-arn {made['topic']} --protocol email --notification-endpoint ADDRESS "
        "--region us-east-1"
    )


def test_an_address_added_since_the_deploy_is_not_subscribed(fake, tmp_path, capsys):
    deploy_stage("dev", REGION, [], secret_set=True)
    status, lines = doctor(tmp_path, capsys)
    assert status == 1
    assert lines["alarm subscriptions"].startswith(
        f"blocks: alarm subscriptions: {REAL_EMAIL} not subscribed to the alarm topic")
    assert "Fix: `npx cdk deploy 'dev/*'`, or send a new confirmation: aws sns subscribe" in lines["alarm subscriptions"]


def test_a_throttled_call_could_not_be_checked_and_exits_2(fake, tmp_path, capsys):
    fake.failing = {"GetAccountSettings": "ThrottlingException"}
    status, lines = doctor(tmp_path, capsys)
    assert status == 2
    assert lines["lambda concurrency"] == (
        "could not be checked: lambda concurrency: AWS throttled lambda:GetAccountSettings after botocore's retries. "
        "Fix: run the doctor again in a minute"
    )
    assert all(line.startswith(("ok: ", "skipped: ", "note: ")) for check, line in lines.items() if check != "lambda concurrency")


def test_the_doctors_clients_retry_throttling_as_botocore_does(fake_aws_credentials):
    client = Aws(boto3.session.Session(region_name=REGION))._client("lambda")
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5} == RETRIES.retries


def test_an_access_denied_call_names_the_permission(fake, tmp_path, capsys):
    fake.failing = {"ListServiceQuotas": "AccessDeniedException"}
    status, lines = doctor(tmp_path, capsys)
    assert status == 2
    for check in ("endpoint instances", "training instances"):
        assert lines[check] == (
            f"could not be checked: {check}: needs permission servicequotas:ListServiceQuotas. Fix: grant it to your "
            "AWS identity (docs/doctor.md lists every permission the doctor needs)"
        )


def test_something_blocking_wins_over_something_unchecked(fake, tmp_path, capsys):
    fake.failing = {"GetAccountSettings": "TooManyRequestsException"}
    fake.applied_quotas = {SPOT_QUOTA: 0}
    status, lines = doctor(tmp_path, capsys)
    assert lines["lambda concurrency"].startswith("could not be checked: ")
    assert lines["training instances"].startswith("blocks: ")
    assert status == 1


def test_codebuild_with_no_build_in_the_history_cannot_be_read(fake, tmp_path, capsys):
    fake.overrides = {"ListBuilds": {}}  # a new account: no build ever
    status, lines = doctor(tmp_path, capsys)
    assert status == 2
    assert lines["codebuild"] == (
        "could not be checked: codebuild: how many Linux/Small builds the account may run in us-east-1 cannot be read "
        "(no API shows it; a new account may run none while Service Quotas shows a default), and it has run none: the "
        "base weights' staging needs one. Fix: if the deploy fails on BaseWeights with \"Cannot have more than 0 builds "
        "in queue for the account\", open an AWS Support case (Support Center: Create case, Service limit increase, "
        "CodeBuild, us-east-1) for \"Concurrently running builds for Linux/Small environment\" of 1 or more, then "
        "deploy again"
    )


def test_without_the_stages_templates_says_to_run_make_synth(fake, tmp_path, capsys):
    status = main(["doctor", "--stage", "dev", "--cdk-out", str(tmp_path / "nowhere")])
    lines = capsys.readouterr().out.splitlines()
    assert status == 2
    assert any(line.startswith("could not be checked: templates: ") and line.endswith(
        "Fix: run `make synth`, then the doctor again") for line in lines), lines
    assert any(line.startswith("could not be checked: bootstrap: CDKToolkit is at version 30") for line in lines)
    assert not any(line.split(": ")[1] in ("region", "lambda concurrency", "endpoint instances", "codebuild") for line in lines)


def test_templates_older_than_the_stage_config_are_not_trusted(fake, tmp_path, capsys):
    manifest = tmp_path / "cdk.out" / "assembly-dev" / "manifest.json"
    os.utime(manifest, (0, 0))  # written before infra/stages.toml was last changed
    status, lines = doctor(tmp_path, capsys)
    assert status == 2
    assert lines["templates"].startswith("could not be checked: templates: ")
    assert " is older than " in lines["templates"] and lines["templates"].endswith("Fix: run `make synth`, then the doctor again")


def test_an_unknown_stage_is_a_usage_error(fake, tmp_path, capsys):
    assert main(["doctor", "--stage", "staging"]) == 2
    assert capsys.readouterr().err == ("taskrouter doctor: infra/stages.toml has no stage 'staging' (it has dev, prod)\n")


def test_a_stage_is_required(capsys):
    assert main(["doctor"]) == 2
    assert capsys.readouterr().err == ("taskrouter doctor: the following arguments are required: --stage "
                                       "(see `taskrouter doctor --help`)\n")


# ----- An endpoint that answers, but not as AWS does (tests/integration/foreign_endpoint.py): a proxy's
# page, a gateway's text 500, an empty 200, an answer cut short, a redirect, a reset. Every call with
# every kind, at the level of the doctor's calls: tests/integration/test_foreign_endpoints.py.

# Each service's own endpoint variable (botocore: AWS_ENDPOINT_URL_ and the service id, in capitals,
# spaces as underscores) and the checks that call it, on a deployed stage.
SERVICE_CHECKS = {
    "AWS_ENDPOINT_URL_STS": {"credentials"},  # nothing else runs without it
    "AWS_ENDPOINT_URL_CLOUDFORMATION": {"bootstrap", "region", "lambda concurrency", "openai secret",
                                        "alarm subscriptions", "unseen tasks"},
    "AWS_ENDPOINT_URL_SSM": {"bootstrap"},
    "AWS_ENDPOINT_URL_LAMBDA": {"lambda concurrency", "unseen tasks"},
    "AWS_ENDPOINT_URL_SERVICE_QUOTAS": {"endpoint instances", "training instances"},
    "AWS_ENDPOINT_URL_CODEBUILD": {"codebuild"},
    "AWS_ENDPOINT_URL_SECRETS_MANAGER": {"openai secret"},
    "AWS_ENDPOINT_URL_SNS": {"alarm subscriptions"},
    "AWS_ENDPOINT_URL_DYNAMODB": {"unseen tasks"},
}


@pytest.mark.parametrize("kind", KINDS)
def test_an_aws_endpoint_url_that_is_not_aws_could_not_be_checked(fake, monkeypatch, tmp_path, capsys, kind):
    (sts,) = [call for call in CALLS if call.operation == "GetCallerIdentity"]
    if kind == "reset":  # botocore retries a reset with backoff (seconds); one attempt is enough to see it told
        monkeypatch.setattr("taskrouter.doctor.aws.RETRIES", Config(retries={"mode": "standard", "total_max_attempts": 1}))
    with ForeignEndpoint(foreign(kind, sts.service, sts.operation, sts.result)) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)
        status, lines = doctor(tmp_path, capsys)
    assert status == 2 and list(lines) == ["credentials", "quality sampling"], lines
    line = lines["credentials"]
    assert line.startswith("could not be checked: credentials: sts:GetCallerIdentity: ") and endpoint.url in line
    assert line.endswith(f"Fix: AWS_ENDPOINT_URL sends STS's calls to {endpoint.url}: unset it, or point it at STS")
    assert endpoint.requests == 1  # the doctor's own retries (5 attempts) leave an answer in no AWS format alone
    if kind == "html 200":  # a proxy's page, well-formed: botocore's XML parser raised KeyError on it
        assert line == (
            f"could not be checked: credentials: sts:GetCallerIdentity: {endpoint.url} answered HTTP 200 (text/html; "
            "charset=utf-8) with XML whose root is <html>, not <GetCallerIdentityResponse>: not an answer of STS. "
            f"Fix: AWS_ENDPOINT_URL sends STS's calls to {endpoint.url}: unset it, or point it at STS")


def test_each_services_endpoint_that_is_not_aws_leaves_its_checks_unchecked(fake, monkeypatch, tmp_path, capsys):
    deploy_stage("dev", REGION, [REAL_EMAIL], secret_set=True)
    with ForeignEndpoint(HTML_200) as endpoint:
        for variable, checks in SERVICE_CHECKS.items():
            with monkeypatch.context() as scoped:
                scoped.setenv(variable, endpoint.url)
                status, lines = doctor(tmp_path, capsys)
            unchecked = {check for check, line in lines.items() if line.startswith("could not be checked: ")}
            assert (status, unchecked) == (2, checks), (variable, lines)
            for check in checks:
                assert endpoint.url in lines[check] and f"Fix: {variable} sends " in lines[check], lines[check]
            assert all(line.startswith(("ok: ", "skipped: ", "note: ")) for check, line in lines.items() if check not in checks), lines


def test_every_call_the_doctor_makes_is_tried_against_an_endpoint_that_is_not_aws(fake, tmp_path, capsys):
    """tests/integration/test_foreign_endpoints.py tries each of CALLS with each kind: a call the doctor
    makes that is not among them would go untried."""
    deploy_stage("dev", REGION, [REAL_EMAIL], secret_set=True)
    fake.applied_quotas = {SPOT_QUOTA: 2}  # the endpoint's quota never changed: read from the defaults
    fake.default_quotas = {ENDPOINT_QUOTA: 4}
    doctor(tmp_path, capsys)
    assert set(fake.asked) == {call.action for call in CALLS}


@pytest.mark.parametrize(("router_env", "said"), [
    ({"TASKROUTER_TABLE_NAME": ""}, "has no TASKROUTER_TABLE_NAME in its environment"),
    ({"TASKROUTER_ADAPTER_TASKS": "Follow Up!"}, "TASKROUTER_ADAPTER_TASKS: 'Follow Up!' is no task name"),
])
def test_a_router_the_doctor_cannot_read_could_not_be_checked(fake, tmp_path, capsys, router_env, said):
    deploy_stage("dev", REGION, [REAL_EMAIL], secret_set=True, router_env=router_env)
    status, lines = doctor(tmp_path, capsys)
    assert status == 2
    assert lines["unseen tasks"].startswith("could not be checked: unseen tasks: function dev-live-router (live")
    assert said in lines["unseen tasks"] and lines["unseen tasks"].endswith("Fix: npx cdk deploy 'dev/*'")


def test_a_stage_that_measures_nothing_says_it_sends_nothing(fake, monkeypatch, tmp_path, capsys):
    """share = 0 with enabled = false: no teacher, nothing leaves AWS for it; still a note, exit 0."""
    stages = tmp_path / "measures-nothing.toml"
    text = write_stages(stages, emails=[REAL_EMAIL]).read_text()
    dev = text.split("\n[prod]\n", 1)[0]
    changed = dev.replace("\nenabled = true", "\nenabled = false", 1).replace("\nshare = 0.2", "\nshare = 0", 1)
    stages.write_text(text.replace(dev, changed, 1))
    monkeypatch.setattr(doctor_stage, "STAGES_FILE", stages)
    status, lines = doctor(tmp_path, capsys)
    assert lines["quality sampling"] == ("note: quality sampling: the stage sends no turn to a teacher (capture.share 0 in "
                                         "[dev] of infra/stages.toml): its quality is not measured")
    assert status == 0, "\n".join(lines.values())
