"""What every check of one run shares: the stage, its account and AWS, and its templates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from taskrouter.doctor.assembly import StageAssembly
from taskrouter.doctor.aws import Aws, error_code
from taskrouter.doctor.stage import StageSettings


@dataclass(frozen=True)
class Context:
    stage: StageSettings
    aws: Aws
    account: str
    assembly: StageAssembly | None  # None: cdk.out could not be read (told once, on its own line)

    @property
    def region(self) -> str:
        return self.stage.region

    @property
    def deploy_command(self) -> str:
        return f"npx cdk deploy '{self.stage.name}/*'"

    def stack(self, name: str) -> dict[str, Any] | None:
        """A CloudFormation stack of the account and region, or None when it does not exist."""
        try:
            return self.aws.call("cloudformation", "DescribeStacks", StackName=name)["Stacks"][0]
        except ClientError as error:
            if error_code(error) == "ValidationError" and "does not exist" in str(error):
                return None
            raise


def outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
