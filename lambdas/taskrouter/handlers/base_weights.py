"""Custom resource that stages the base model's weights in the stage's bucket during `cdk deploy`
(infra/base_weights.py): `on_event` starts the CodeBuild project that copies the pinned revision
from the hub, `is_complete` reports when it is done. CDK's Provider framework calls both, polling
`is_complete` until it says so or the provider's total timeout passes.

The build is idempotent per revision (it stops at once when the revision's marker object is in the
bucket), so an update, a retry or a re-deploy costs seconds. A deleted resource leaves the weights:
the bucket's own removal policy decides about them, and a rollback to this revision finds them.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

# Built at init: a call of the Provider framework pays only the request.
_codebuild = boto3.client("codebuild", config=Config(retries={"mode": "standard", "max_attempts": 5}))

SUCCEEDED = "SUCCEEDED"
IN_PROGRESS = "IN_PROGRESS"


class StagingFailed(RuntimeError):
    """The build ended without the weights; CloudFormation shows this message and rolls back."""


# New accounts often may run no CodeBuild build at all, whatever Service Quotas shows; StartBuild then
# refuses with AccountLimitExceededException ("Cannot have more than 0 builds in queue for the
# account"), or a build waits in the queue until its queued timeout (infra/base_weights.py).
_BUILD_LIMIT_FIX = (
    "the account's CodeBuild limit lets no build run: open an AWS Support case for concurrently running "
    "builds (Linux/Small) of 1 or more in this region, then deploy again (`taskrouter doctor` checks it)"
)


def on_event(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    props = event["ResourceProperties"]
    # One physical resource per pinned revision: a new revision replaces it, the old one's Delete
    # then finds nothing to do.
    physical_id = f"{props['ModelId']}@{props['Revision']}"
    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": event["PhysicalResourceId"]}
    try:
        build = _codebuild.start_build(projectName=props["ProjectName"])["build"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "AccountLimitExceededException":
            raise StagingFailed(f"CodeBuild refused the build ({error.response['Error'].get('Message', '')}): {_BUILD_LIMIT_FIX}") from None
        raise
    return {"PhysicalResourceId": physical_id, "Data": {"BuildId": build["id"], "S3Uri": props["S3Uri"]}}


def is_complete(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    if event["RequestType"] == "Delete":
        return {"IsComplete": True}
    build_id = event["Data"]["BuildId"]
    builds = _codebuild.batch_get_builds(ids=[build_id])["builds"]
    if not builds:
        raise StagingFailed(f"CodeBuild has no build {build_id}")
    status = builds[0]["buildStatus"]
    if status == IN_PROGRESS:
        return {"IsComplete": False}
    if status != SUCCEEDED:
        if _never_left_the_queue(builds[0]):
            raise StagingFailed(f"staging the base model's weights never left CodeBuild's queue (build {build_id}): {_BUILD_LIMIT_FIX}")
        logs = builds[0].get("logs", {}).get("groupName", "the project's log group")
        raise StagingFailed(
            f"staging the base model's weights ended {status} (build {build_id}): its log is in {logs}; "
            "fix the cause (hub reachable, revision exists, disk) and deploy again"
        )
    return {"IsComplete": True, "Data": {"S3Uri": event["Data"]["S3Uri"]}}


def _never_left_the_queue(build: dict[str, Any]) -> bool:
    return build.get("currentPhase") == "QUEUED" or any(
        phase.get("phaseType") == "QUEUED" and phase.get("phaseStatus") == "TIMED_OUT" for phase in build.get("phases", [])
    )
