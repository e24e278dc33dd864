"""The base weights' staging custom resource (handlers/base_weights.py, called by CDK's Provider
framework): a build started per create or update, one physical resource per pinned revision, a
delete that starts nothing, and a failed build that fails the deploy with where to look.

CodeBuild is moto's (in process) where a build's course does not matter; moto finishes every build
at once, so a build still running or failed is answered by botocore's Stubber, which checks each
request and reply against botocore's own CodeBuild model (botocore/data/codebuild/2016-10-06,
BatchGetBuilds; StatusType's values)."""

from __future__ import annotations

import importlib

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

PROPS = {
    "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider",
    "ProjectName": "base-weights-copy",
    "ModelId": "Qwen/Qwen2.5-1.5B-Instruct",
    "Revision": "989aa7980e4cf806f80c7fef2b1adb7bc71aa306",
    "S3Uri": "s3://taskrouter-dev-models-123456789012-us-east-1/base/Qwen/Qwen2.5-1.5B-Instruct/989aa7980e4cf806f80c7fef2b1adb7bc71aa306/",
}


@pytest.fixture
def handler(monkeypatch, fake_aws_credentials):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        from taskrouter.handlers import base_weights

        module = importlib.reload(base_weights)  # its client is made at import, as in Lambda's init
        boto3.client("codebuild").create_project(
            name=PROPS["ProjectName"],
            source={"type": "S3", "location": "moto-needs-a-location/src.zip"},  # moto's rule, not CodeBuild's
            artifacts={"type": "NO_ARTIFACTS"},
            environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0", "computeType": "BUILD_GENERAL1_SMALL"},
            serviceRole="arn:aws:iam::123456789012:role/service-role/copy",
        )
        yield module


def _builds() -> list[str]:
    return boto3.client("codebuild").list_builds_for_project(projectName=PROPS["ProjectName"])["ids"]


def test_a_create_starts_the_copy_and_completes_when_the_build_succeeds(handler):
    started = handler.on_event({"RequestType": "Create", "ResourceProperties": PROPS})
    assert started["PhysicalResourceId"] == f"{PROPS['ModelId']}@{PROPS['Revision']}"
    assert started["Data"]["BuildId"] in _builds()
    done = handler.is_complete({"RequestType": "Create", "ResourceProperties": PROPS, **started})
    assert done == {"IsComplete": True, "Data": {"S3Uri": PROPS["S3Uri"]}}


def test_a_new_revision_is_a_new_physical_resource_and_the_old_ones_delete_starts_nothing(handler):
    first = handler.on_event({"RequestType": "Create", "ResourceProperties": PROPS})
    newer = {**PROPS, "Revision": "a" * 40}
    updated = handler.on_event({
        "RequestType": "Update", "ResourceProperties": newer, "OldResourceProperties": PROPS,
        "PhysicalResourceId": first["PhysicalResourceId"],
    })
    assert updated["PhysicalResourceId"] == f"{PROPS['ModelId']}@{'a' * 40}" != first["PhysicalResourceId"]
    assert len(_builds()) == 2
    # CloudFormation then deletes the replaced one: the weights stay, no build starts
    delete = {"RequestType": "Delete", "ResourceProperties": PROPS, "PhysicalResourceId": first["PhysicalResourceId"]}
    assert handler.on_event(delete) == {"PhysicalResourceId": first["PhysicalResourceId"]}
    assert handler.is_complete(delete) == {"IsComplete": True}
    assert len(_builds()) == 2


@pytest.mark.parametrize("status", ["FAILED", "FAULT", "TIMED_OUT", "STOPPED"])
def test_a_build_still_running_is_waited_for_and_one_that_ended_badly_fails_the_deploy(handler, status):
    event = {"RequestType": "Create", "ResourceProperties": PROPS, "PhysicalResourceId": "x",
             "Data": {"BuildId": "base-weights-copy:1234", "S3Uri": PROPS["S3Uri"]}}
    with Stubber(handler._codebuild) as codebuild:
        for now in ("IN_PROGRESS", status):
            codebuild.add_response(
                "batch_get_builds",
                {"builds": [{"id": "base-weights-copy:1234", "buildStatus": now,
                             "logs": {"groupName": "/aws/codebuild/base-weights-copy"}}]},
                {"ids": ["base-weights-copy:1234"]},
            )
        assert handler.is_complete(event) == {"IsComplete": False}
        with pytest.raises(handler.StagingFailed, match=f"ended {status}.*/aws/codebuild/base-weights-copy"):
            handler.is_complete(event)
        codebuild.assert_no_pending_responses()


def test_a_build_the_account_limit_keeps_queued_names_the_support_case(handler):
    """A new account's CodeBuild limit: the build waits its queued timeout out (CodeBuild's
    Build.phases, phaseType QUEUED, phaseStatus TIMED_OUT) and the deploy says what to ask AWS."""
    event = {"RequestType": "Create", "ResourceProperties": PROPS, "PhysicalResourceId": "x",
             "Data": {"BuildId": "base-weights-copy:1234", "S3Uri": PROPS["S3Uri"]}}
    with Stubber(handler._codebuild) as codebuild:
        codebuild.add_response(
            "batch_get_builds",
            {"builds": [{"id": "base-weights-copy:1234", "buildStatus": "TIMED_OUT", "currentPhase": "QUEUED",
                         "phases": [{"phaseType": "SUBMITTED", "phaseStatus": "SUCCEEDED"},
                                    {"phaseType": "QUEUED", "phaseStatus": "TIMED_OUT"}]}]},
            {"ids": ["base-weights-copy:1234"]},
        )
        with pytest.raises(handler.StagingFailed, match="never left CodeBuild's queue.*AWS Support case"):
            handler.is_complete(event)


def test_a_start_the_account_limit_refuses_names_the_support_case(handler):
    with Stubber(handler._codebuild) as codebuild:
        codebuild.add_client_error(
            "start_build", service_error_code="AccountLimitExceededException",
            service_message="Cannot have more than 0 builds in queue for the account", http_status_code=400,
        )
        with pytest.raises(handler.StagingFailed, match="Cannot have more than 0 builds in queue.*AWS Support case"):
            handler.on_event({"RequestType": "Create", "ResourceProperties": PROPS})
