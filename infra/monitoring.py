"""Alarms on latency, errors and throttles, all notifying the stage's encrypted alarm topic."""

from __future__ import annotations

from aws_cdk import (
    Duration,
    Stack,
    aws_apigateway as apigw,
    aws_cloudwatch as cloudwatch,
    aws_iam as iam,
    aws_kms as kms,
    aws_lambda as lambda_,
    aws_sns as sns,
    aws_sns_subscriptions as subscriptions,
)
from cdk_monitoring_constructs import (
    AlarmFactoryDefaults,
    CustomMetricGroup,
    CustomMetricWithAlarm,
    CustomThreshold,
    ErrorCountThreshold,
    LatencyThreshold,
    MonitoringFacade,
    SnsAlarmActionStrategy,
)
from constructs import Construct

from infra.config import StageConfig

SAGEMAKER_MODEL_LATENCY_ALARM_US_FACTOR = 1000  # ModelLatency is published in microseconds


class MonitoringStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        api: apigw.RestApi,
        router: lambda_.IFunction,
        endpoint_name: str,
        adapter_component_name: str,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        budget = Duration.millis(stage.latency_budget_ms)

        # CloudWatch must be able to use the topic's key, which an AWS-managed key does not allow.
        topic_key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"TaskRouter {stage.name}: alarm topic",
            enable_key_rotation=True,
            removal_policy=stage.removal_policy,
        )
        topic_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # "*" in a key policy means this key
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        self.alarm_topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"TaskRouter {stage.name} alarms",
            master_key=topic_key,
            enforce_ssl=True,
        )
        for email in stage.alarm_emails:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(email))

        facade = MonitoringFacade(
            self,
            "Monitoring",
            alarm_factory_defaults=AlarmFactoryDefaults(
                alarm_name_prefix=f"taskrouter-{stage.name}",
                actions_enabled=True,
                action=SnsAlarmActionStrategy(on_alarm_topic=self.alarm_topic, on_ok_topic=self.alarm_topic),
                datapoints_to_alarm=3,
                evaluation_periods=5,
            ),
        )
        facade.monitor_api_gateway(
            api=api,
            alarm_friendly_name="Api",
            api_stage=api.deployment_stage.stage_name,
            add_latency_p90_alarm={"Budget": LatencyThreshold(max_latency=budget)},
            add5_xx_fault_count_alarm={"Faults": ErrorCountThreshold(max_error_count=0)},
        )
        facade.monitor_lambda_function(
            lambda_function=router,
            alarm_friendly_name="Router",
            add_latency_p99_alarm={"Budget": LatencyThreshold(max_latency=budget)},
            add_fault_count_alarm={"Errors": ErrorCountThreshold(max_error_count=0)},
            add_throttles_count_alarm={"Throttles": ErrorCountThreshold(max_error_count=0)},
        )
        model_latency = cloudwatch.Metric(
            namespace="AWS/SageMaker",
            metric_name="ModelLatency",
            dimensions_map={"InferenceComponentName": adapter_component_name},
            statistic="p90",
            period=Duration.minutes(1),
            label=f"ModelLatency p90 of {endpoint_name} (microseconds)",
        )
        facade.monitor_custom(
            alarm_friendly_name="SageMaker",
            human_readable_name=f"SageMaker endpoint {endpoint_name}",
            metric_groups=[
                CustomMetricGroup(
                    title="Model latency (µs)",
                    metrics=[
                        CustomMetricWithAlarm(
                            alarm_friendly_name="ModelLatencyP90",
                            metric=model_latency,
                            add_alarm={
                                "Budget": CustomThreshold(
                                    threshold=stage.primary_timeout_ms * SAGEMAKER_MODEL_LATENCY_ALARM_US_FACTOR,
                                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                                    treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING,
                                )
                            },
                        )
                    ],
                )
            ],
        )
