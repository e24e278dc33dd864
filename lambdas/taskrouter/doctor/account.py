"""The account itself: whose credentials these are, CDK's bootstrap, and what the region offers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore import exceptions as aws_errors

from taskrouter.doctor import needs
from taskrouter.cli import CREDENTIALS_FIX
from taskrouter.doctor.assembly import DEFAULT_BOOTSTRAP_PARAMETER, SYNTH_FIX
from taskrouter.doctor.aws import Aws, CallFailed, error_code
from taskrouter.doctor.context import Context, outputs
from taskrouter.doctor.findings import Finding, blocks, ok, unchecked
from taskrouter.doctor.guard import not_answered
from taskrouter.doctor.stage import StageSettings

RENEW_FIX = f"renew them (`aws sso login` for an SSO profile), or {CREDENTIALS_FIX}"
_EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
_REFUSED = frozenset({"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "InvalidAccessKeyId"})
# The states in which CDKToolkit's resources are in place (a failed update rolled back included).
_USABLE = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE",
                     "IMPORT_ROLLBACK_COMPLETE"})
_TOOLKIT_STACK = "CDKToolkit"
_TYPE_LOOKUPS_AT_ONCE = 4  # DescribeType per resource type: a few at a time, well under CloudFormation's rate


def credentials(stage: StageSettings, new_aws: Callable[[], Aws]) -> tuple[Finding, Aws | None, str | None]:
    """STS GetCallerIdentity, which needs no permission: the AWS access and account every other check
    uses, or why there are none."""
    check = "credentials"
    try:
        aws = new_aws()
        identity = aws.call("sts", "GetCallerIdentity")
        account, arn = str(identity["Account"]), identity["Arn"]
    except (aws_errors.BotoCoreError, aws_errors.ClientError, CallFailed) as error:
        return _no_identity(error), None, None
    if stage.account is not None and stage.account != account:
        return blocks(check, f"the credentials are of account {account}, {stage.table} deploys to {stage.account}",
                      f"set AWS_PROFILE to a profile of account {stage.account}"), None, None
    return ok(check, f"account {account} as {arn}"), aws, account


def _no_identity(error: Exception) -> Finding:
    check = "credentials"
    code = error_code(error) if isinstance(error, aws_errors.ClientError) else ""
    if isinstance(error, (aws_errors.NoCredentialsError, aws_errors.PartialCredentialsError)):
        return blocks(check, "no AWS credentials found", CREDENTIALS_FIX)
    if isinstance(error, aws_errors.ProfileNotFound):
        return blocks(check, str(error),
                      "set AWS_PROFILE to a profile of ~/.aws/config, or run `aws configure --profile NAME`")
    if isinstance(error, (aws_errors.TokenRetrievalError, aws_errors.SSOError, aws_errors.UnauthorizedSSOTokenError)):
        return blocks(check, str(error), RENEW_FIX)
    if code in _EXPIRED:
        return blocks(check, f"the credentials have expired ({code})", RENEW_FIX)
    if code in _REFUSED:
        return blocks(check, f"AWS refused the credentials ({code})", CREDENTIALS_FIX)
    if isinstance(error, CallFailed):
        return not_answered(check, error)
    if isinstance(error, aws_errors.BotoCoreError):  # no network, no endpoint for the region
        return unchecked(check, str(error), "check the network and the stage's region")
    return unchecked(check, str(error))


def bootstrap(ctx: Context) -> Finding:
    """CDK's toolkit stack, at a version the templates' CheckBootstrapVersion rule accepts (it reads
    the version from the SSM parameter the bootstrap writes)."""
    check, region = "bootstrap", ctx.region
    fix = f"npx cdk bootstrap aws://{ctx.account}/{region}"
    stack = ctx.stack(_TOOLKIT_STACK)
    if stack is None:
        return blocks(check, f"{region} of account {ctx.account} is not bootstrapped (no stack {_TOOLKIT_STACK})", fix)
    status = stack["StackStatus"]
    if status.endswith("_IN_PROGRESS"):
        return unchecked(check, f"stack {_TOOLKIT_STACK} is {status}", "run the doctor again once it is done")
    if status not in _USABLE:
        if status in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED"):  # a first bootstrap that failed: delete it first
            fix = f"aws cloudformation delete-stack --stack-name {_TOOLKIT_STACK} --region {region}, then {fix}"
        return blocks(check, f"stack {_TOOLKIT_STACK} is {status}", fix)
    parameter = ctx.assembly.bootstrap_parameter if ctx.assembly else None
    version = _bootstrap_version(ctx, stack, parameter)
    if version is None:
        return blocks(check, f"stack {_TOOLKIT_STACK} tells no bootstrap version", fix)
    if ctx.assembly is None:
        return unchecked(check, f"{_TOOLKIT_STACK} is at version {version}; the version the stage needs is in its "
                                "templates", SYNTH_FIX)
    needed = ctx.assembly.bootstrap_version_needed
    if version < needed:
        return blocks(check, f"{_TOOLKIT_STACK} in {region} is at version {version}, the stage's templates need "
                             f"{needed} or later", fix)
    return ok(check, f"{_TOOLKIT_STACK} in {region} at version {version} (the stage needs {needed} or later)")


def _bootstrap_version(ctx: Context, stack: dict[str, Any], parameter: str | None) -> int | None:
    """The SSM parameter's value (what a deploy checks), else the stack's BootstrapVersion output."""
    try:
        answer = ctx.aws.call("ssm", "GetParameter", Name=parameter or DEFAULT_BOOTSTRAP_PARAMETER)
        value = answer["Parameter"]["Value"]
    except aws_errors.ClientError as error:
        if error_code(error) != "ParameterNotFound":
            raise
        value = outputs(stack).get("BootstrapVersion")
    return int(value) if value is not None and str(value).isdigit() else None


def region_offers(ctx: Context) -> Finding:
    """Every resource type of the templates, as CloudFormation's registry in the region knows it: a
    region lacking one (inference components, in eu-west-3) answers TypeNotFoundException."""
    assert ctx.assembly is not None
    types = needs.resource_types(ctx.assembly)
    with ThreadPoolExecutor(max_workers=_TYPE_LOOKUPS_AT_ONCE) as pool:
        known = list(pool.map(lambda name: _type_exists(ctx.aws, name), types))
    missing = [name for name, found in zip(types, known) if not found]
    if missing:
        return blocks(
            "region",
            f"CloudFormation in {ctx.region} has no {', '.join(missing)} (TypeNotFoundException), which the stage uses",
            f"set region in {ctx.stage.table} to one that has them (`aws cloudformation describe-type --type RESOURCE "
            f"--type-name {missing[0]} --region REGION` answers there), then `make synth`",
        )
    return ok("region", f"CloudFormation in {ctx.region} has all {len(types)} resource types the stage uses")


def _type_exists(aws: Aws, type_name: str) -> bool:
    try:
        aws.call("cloudformation", "DescribeType", Type="RESOURCE", TypeName=type_name)
    except aws_errors.ClientError as error:
        if error_code(error) == "TypeNotFoundException":
            return False
        raise
    return True
