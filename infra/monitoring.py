"""Alarms on latency, errors and throttles, all notifying the stage's encrypted alarm topic."""

from __future__ import annotations

import functools

from aws_cdk import (
    ArnFormat,
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

from infra.api import METRICS_NAMESPACE, ROUTER_SERVICE
from infra.config import StageConfig

SAGEMAKER_MODEL_LATENCY_ALARM_US_FACTOR = 1000  # ModelLatency is published in microseconds
# Share of decisions the fallback made (the router's `Fallback` metric is 0 or 1 per decision):
# past half, the primary is effectively down or wrong, whatever each request's reason.
FALLBACK_RATE_ALARM = 0.5


class MonitoringStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        api: apigw.RestApi,
        router: lambda_.IFunction,
        registry: lambda_.IFunction,
        component_names: list[str],
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # The API's and the function's own latency mix every strategy's requests: they alarm past the
        # slowest strategy's budget, a backstop; DecisionLatency, by strategy, holds each to its own.
        backstop = Duration.millis(max(budget.latency_ms for budget in stage.budgets.values()))

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
        # An explicit topic policy (here from enforce_ssl) replaces SNS's default one: CloudWatch
        # alarms of this account must be allowed to publish in it.
        self.alarm_topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.alarm_topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": self.account},
                    "ArnLike": {"aws:SourceArn": self.format_arn(service="cloudwatch", resource="alarm", resource_name="*", arn_format=ArnFormat.COLON_RESOURCE_NAME)},
                },
            )
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
            add_latency_p90_alarm={"Budget": LatencyThreshold(max_latency=backstop)},
            add5_xx_fault_count_alarm={"Faults": ErrorCountThreshold(max_error_count=0)},
        )
        facade.monitor_lambda_function(
            lambda_function=router,
            alarm_friendly_name="Router",
            add_latency_p99_alarm={"Budget": LatencyThreshold(max_latency=backstop)},
            add_fault_count_alarm={"Errors": ErrorCountThreshold(max_error_count=0)},
            add_throttles_count_alarm={"Throttles": ErrorCountThreshold(max_error_count=0)},
        )
        facade.monitor_lambda_function(
            lambda_function=registry,
            alarm_friendly_name="Registry",
            add_fault_count_alarm={"Errors": ErrorCountThreshold(max_error_count=0)},
        )
        router_metric = functools.partial(
            cloudwatch.Metric,
            namespace=METRICS_NAMESPACE,
            dimensions_map={"service": ROUTER_SERVICE},
            period=Duration.minutes(5),
        )
        # p90, as the API's: a decision the fallback makes takes longer than the budget by nature, and
        # the fallback rate has an alarm of its own.
        decision_latency = [
            _alarmed(
                f"Decision latency p90, {strategy.value} (ms)",
                f"DecisionLatencyP90-{strategy.value}",
                cloudwatch.Metric(
                    namespace=METRICS_NAMESPACE,
                    metric_name="DecisionLatency",
                    dimensions_map={"service": ROUTER_SERVICE, "strategy": strategy.value},
                    statistic="p90",
                    period=Duration.minutes(5),
                ),
                above=budget.latency_ms,
            )
            for strategy, budget in stage.budgets.items()
        ]
        facade.monitor_custom(
            alarm_friendly_name="Router",
            human_readable_name="Router decisions",
            metric_groups=[
                *decision_latency,
                _alarmed("Fallback rate", "FallbackRate", router_metric(metric_name="Fallback", statistic="Average"),
                         above=FALLBACK_RATE_ALARM),
                _alarmed("Unexpected errors (bugs, bad configuration)", "UnexpectedErrors",
                         router_metric(metric_name="UnexpectedError", statistic="Sum"), above=0),
            ],
        )
        # ModelLatency is an AWS/SageMaker invocation metric with the dimension InferenceComponentName.
        # AWS's documentation does not say whether an adapter component's invocations are counted
        # under its own name (the one the router invokes) or its base component's: every component
        # is watched, the base and each adapter.
        # Missing data is not breaching: an idle endpoint publishes nothing and is not a broken one
        # (a failing one shows in the fallback rate and the router's errors).
        # It has no strategy dimension and every strategy's calls are in it: it alarms past the slowest
        # strategy's primary timeout (a model slower than every deadline is broken); DecisionLatency,
        # by strategy, holds each strategy to its own budget.
        model_latency_alarm_us = (
            max(budget.primary_timeout_ms for budget in stage.budgets.values()) * SAGEMAKER_MODEL_LATENCY_ALARM_US_FACTOR
        )
        facade.monitor_custom(
            alarm_friendly_name="SageMaker",
            human_readable_name=f"SageMaker endpoint {stage.endpoint_name}",
            metric_groups=[
                _alarmed(
                    f"Model latency p90 of {component} (µs)",
                    f"ModelLatencyP90-{component.removeprefix(f'taskrouter-{stage.name}-')}",
                    cloudwatch.Metric(
                        namespace="AWS/SageMaker",
                        metric_name="ModelLatency",
                        dimensions_map={"InferenceComponentName": component},
                        statistic="p90",
                        period=Duration.minutes(1),
                        label=f"ModelLatency p90 of {component} (microseconds)",
                    ),
                    above=model_latency_alarm_us,
                )
                for component in component_names
            ],
        )


def _alarmed(title: str, name: str, metric: cloudwatch.Metric, *, above: float) -> CustomMetricGroup:
    """A dashboard group of one metric, alarming when it is above `above` (no data: no alarm)."""
    return CustomMetricGroup(
        title=title,
        metrics=[
            CustomMetricWithAlarm(
                alarm_friendly_name=name,
                metric=metric,
                add_alarm={
                    "Threshold": CustomThreshold(
                        threshold=above,
                        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                        treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING,
                    )
                },
            )
        ],
    )
