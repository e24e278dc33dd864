"""Operator-set runtime state, kept apart from the stateless stacks: the OpenAI key's secret and the
router's operations mode."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack, aws_secretsmanager as secretsmanager, aws_ssm as ssm
from constructs import Construct

from infra.config import StageConfig
from infra.nag import acknowledge
from taskrouter.core.resilience import OpsMode


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
        # primary_first, or openai_only to take the endpoint out of the path (operators, alarm handling).
        self.ops_mode = ssm.StringParameter(
            self,
            "OpsMode",
            parameter_name=f"/taskrouter/{stage.name}/ops-mode",
            description="TaskRouter router mode: primary_first or openai_only",
            string_value=OpsMode.PRIMARY_FIRST.value,
            allowed_pattern=f"^({'|'.join(mode.value for mode in OpsMode)})$",
        )
        # The alarm handling's state (handlers/alarms.py): the last alarm change applied, a held
        # fail-back, an operator's override. Written by the handler and `taskrouter ops mode set`, who
        # create it on their first write; never by CloudFormation, whose updates would put its
        # template value back over the live state (an override included).
        self.failover_state = ssm.StringParameter.from_string_parameter_name(
            self, "FailoverState", f"/taskrouter/{stage.name}/failover-state"
        )
        CfnOutput(self, "OpenAISecretArn", value=self.openai_secret.secret_arn)
        CfnOutput(self, "FailoverStateParameter", value=self.failover_state.parameter_name)
        CfnOutput(self, "OpsModeParameter", value=self.ops_mode.parameter_name)
