"""Operator-set runtime state, kept apart from the stateless stacks: the OpenAI key's secret."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack, aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import StageConfig
from infra.nag import acknowledge


class OperationsStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.openai_secret = secretsmanager.Secret(
            self,
            "OpenAIApiKey",
            description=f"TaskRouter {stage.name}: OpenAI API key of the fallback (set it after deploy)",
            removal_policy=stage.removal_policy,
        )
        acknowledge(
            self.openai_secret,
            "AwsSolutions-SMG4",
            "an OpenAI API key is issued by OpenAI, not by AWS: operators rotate it by hand (README), no Lambda can",
        )
        CfnOutput(self, "OpenAISecretArn", value=self.openai_secret.secret_arn)
