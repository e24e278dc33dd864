"""The task registry: a DynamoDB table in a stateful stack of its own."""

from __future__ import annotations

from aws_cdk import Stack, aws_dynamodb as dynamodb
from constructs import Construct

from infra.config import StageConfig
from taskrouter.registry_schema import PARTITION_KEY, SORT_KEY


class RegistryStack(Stack):
    """Stateful: stateless stacks may be destroyed and rebuilt without touching it."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.table = dynamodb.Table(
            self,
            "Tasks",
            partition_key=dynamodb.Attribute(name=PARTITION_KEY, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=SORT_KEY, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=stage.retain_on_delete,
            removal_policy=stage.removal_policy,
        )
