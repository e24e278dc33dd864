"""`taskrouter doctor --stage STAGE [--cdk-out DIR]`: one line per check, each `ok: ...` or what
blocks and its fix; exit 0 when all is ok, 1 when something blocks, 2 when something could not be
checked and nothing blocks (docs/doctor.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from taskrouter.arguments import OneLineParser
from taskrouter.doctor import account, deployed, quality, quotas
from taskrouter.doctor.assembly import CDK_OUT, SYNTH_FIX, AssemblyError, read_assembly
from taskrouter.doctor.aws import Aws
from taskrouter.doctor.context import Context
from taskrouter.doctor.findings import Finding, exit_status, unchecked
from taskrouter.doctor.guard import guarded
from taskrouter.doctor.stage import StageError, StageSettings, load_stage

_PROG = "taskrouter doctor"


def aws_session(region: str) -> Any:
    """The session every call goes through: the default credential chain (AWS_PROFILE and the rest)."""
    import boto3

    return boto3.session.Session(region_name=region)


def main(argv: list[str]) -> int:
    parser = OneLineParser(prog=_PROG, description="Preflight of a stage's AWS account: one line per check (docs/doctor.md).")
    parser.add_argument("--stage", required=True, help="a stage of infra/stages.toml (dev, prod)")
    parser.add_argument("--cdk-out", type=Path, default=CDK_OUT,
                        help="the cloud assembly `make synth` wrote (default: cdk.out)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0), or a usage error already printed (2)
        return done.code if isinstance(done.code, int) else 0
    try:
        stage = load_stage(args.stage)
    except StageError as error:
        print(f"{_PROG}: {error}", file=sys.stderr)
        return 2
    findings = []
    for finding in run_checks(stage, lambda: Aws(aws_session(stage.region)), args.cdk_out):
        print(finding.line(), flush=True)  # each as it ends: some take seconds
        findings.append(finding)
    return exit_status(findings)


def run_checks(stage: StageSettings, new_aws: Callable[[], Aws], cdk_out: Path) -> Iterator[Finding]:
    found, aws, account_id = account.credentials(stage, new_aws)
    yield found
    if aws is None or account_id is None:  # every other check asks AWS, as this identity
        yield quality.sampling(stage)  # but this one: what the stage sends out of AWS, whatever the account
        return
    try:
        assembly = read_assembly(stage.name, stage.region, cdk_out)
    except AssemblyError as error:
        assembly = None
        yield unchecked("templates", f"{error} (the bootstrap version, region, Lambda concurrency, endpoint instances "
                                     "and CodeBuild checks read the stage's templates)", SYNTH_FIX)
    ctx = Context(stage, aws, account_id, assembly)
    sagemaker = quotas.ServiceQuotas(aws, "sagemaker")
    yield from guarded("bootstrap", lambda: account.bootstrap(ctx))
    if assembly is not None:
        yield from guarded("region", lambda: account.region_offers(ctx))
        yield from guarded("lambda concurrency", lambda: quotas.lambda_concurrency(ctx))
        yield from guarded("endpoint instances", lambda: quotas.endpoint_instances(ctx, sagemaker))
    yield from guarded("training instances", lambda: quotas.training_instances(ctx, sagemaker))
    if assembly is not None:
        yield from guarded("codebuild", lambda: quotas.codebuild(ctx))
    yield deployed.alarm_emails(stage)
    yield from guarded("openai secret", lambda: deployed.openai_secret(ctx))
    yield from guarded("alarm subscriptions", lambda: deployed.alarm_subscriptions(ctx))
    yield from guarded("unseen tasks", lambda: deployed.unseen(ctx))
    yield quality.sampling(stage)
