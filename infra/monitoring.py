"""Alarms on latency, errors and throttles, all notifying the stage's encrypted alarm topic."""

from __future__ import annotations

import functools

from aws_cdk import (
    ArnFormat,
    CfnOutput,
    Duration,
    Stack,
    aws_apigateway as apigw,
    aws_cloudwatch as cloudwatch,
    aws_cloudwatch_actions as cw_actions,
    aws_dynamodb as dynamodb,
    aws_iam as iam,
    aws_kms as kms,
    aws_lambda as lambda_,
    aws_sns as sns,
    aws_sns_subscriptions as subscriptions,
)
from aws_cdk import aws_events as events, aws_events_targets as targets, aws_ssm as ssm
from cdk_monitoring_constructs import (
    AlarmFactoryDefaults,
    CustomMetricGroup,
    CustomMetricWithAlarm,
    CustomThreshold,
    DefaultDashboardFactory,
    ErrorCountThreshold,
    GraphWidgetType,
    LatencyThreshold,
    MonitoringFacade,
    SnsAlarmActionStrategy,
    ThrottledEventsThreshold,
)
from constructs import Construct

from infra.api import METRICS_NAMESPACE, ROUTER_SERVICE
from infra.capture import TEACHER_SERVICE
from infra.config import StageConfig
from infra.functions import bundled_function
from infra.runbook import runbook
from taskrouter.adapters.teacher_metrics import (
    BAND_DIMENSION,
    CONFIDENCE_BANDS,
    TEACHER_AGREEMENT,
    TEACHER_AGREEMENT_BY_CONFIDENCE,
    TEACHER_AGREEMENT_KEPT,
)
from taskrouter.core.request import Strategy
from taskrouter.operations.failover import DEFAULT_HOLD_S

# Share of the primary's answers that failed (timeout, error, throttled, invalid output) over the
# requests it was asked: past a quarter, the router is better served by OpenAI alone.
PRIMARY_FAILURE_RATE_ALARM = 0.25
# Share of decisions whose primary answer was in no allowed form: constrained decoding makes it rare, so
# a few percent means the model, its adapter or the serving settings regressed.
INVALID_OUTPUT_RATE_ALARM = 0.05
API_4XX_SHARE_ALARM = 0.25
ALARM_HANDLER_SERVICE = "taskrouter-alarm-handling"


def primary_degraded_name(stage: StageConfig) -> str:
    """The composite alarm's name: known at synth, so the handler's subscription filters on it."""
    return f"taskrouter-{stage.name}-primary-degraded"


SAGEMAKER_MODEL_LATENCY_ALARM_US_FACTOR = 1000  # ModelLatency is published in microseconds
# Share of decisions the fallback made (the router's `Fallback` metric is 0 or 1 per decision):
# past half, the primary is effectively down or wrong, whatever each request's reason.
FALLBACK_RATE_ALARM = 0.5
# Share of sampled turns the router could not hand to the teacher within its bound (`CaptureDropped`,
# 0 or 1 per send): a few are by design; past half, capture is broken and TeacherAgreement goes blind.
CAPTURE_DROPPED_RATE_ALARM = 0.5
# The teacher's answers, by cause of failure (docs/capture.md, the record's `teacher.error`).
TEACHER_FAILURE_CAUSES = ("timeout", "throttled", "capped", "error", "invalid_output")


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
        table: dynamodb.ITable,
        component_names: list[str],
        ops_mode: ssm.IStringParameter,
        failover_state: ssm.IStringParameter,
        endpoint_arn: str,
        teacher: lambda_.IFunction | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # The API's and the function's own latency mix every strategy's requests: they alarm past the
        # slowest strategy's budget, a backstop; DecisionLatency, by strategy, holds each to its own.
        backstop = Duration.millis(max(budget.latency_ms for budget in stage.budgets.values()))

        # CloudWatch must be able to use the topic's key, which an AWS-managed key does not allow.
        self.topic_key = topic_key = kms.Key(
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
        CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic_arn)  # `taskrouter ops` announces on it
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
            # One dashboard per stage, named after it (two stages in one region never share one).
            dashboard_factory=DefaultDashboardFactory(
                self, "Dashboards", dashboard_name_prefix=f"taskrouter-{stage.name}",
                create_dashboard=True, create_summary_dashboard=False, create_alarm_dashboard=False,
            ),
        )
        facade.monitor_api_gateway(
            api=api,
            alarm_friendly_name="Api",
            api_stage=api.deployment_stage.stage_name,
            add_latency_p90_alarm={"Budget": LatencyThreshold(max_latency=backstop, runbook_link=runbook("api-latency"))},
            add5_xx_fault_count_alarm={"Faults": ErrorCountThreshold(max_error_count=0, runbook_link=runbook("api-5xx-faults"))},
        )
        facade.monitor_lambda_function(
            lambda_function=router,
            alarm_friendly_name="Router",
            add_latency_p99_alarm={"Budget": LatencyThreshold(max_latency=backstop, runbook_link=runbook("router-latency"))},
            add_fault_count_alarm={"Errors": ErrorCountThreshold(max_error_count=0, runbook_link=runbook("router-errors"))},
            add_throttles_count_alarm={"Throttles": ErrorCountThreshold(max_error_count=0, runbook_link=runbook("router-throttles"))},
        )
        facade.monitor_lambda_function(
            lambda_function=registry,
            alarm_friendly_name="Registry",
            add_fault_count_alarm={"Errors": ErrorCountThreshold(max_error_count=0, runbook_link=runbook("registry-errors"))},
        )
        # The table: DynamoDB's own failures (on-demand capacity throttles only on sudden bursts).
        facade.monitor_dynamo_table(
            table=table,
            alarm_friendly_name="RegistryTable",
            add_system_error_count_alarm={"Errors": ErrorCountThreshold(max_error_count=0, runbook_link=runbook("registry-table"))},
            add_read_throttled_events_count_alarm={"Throttles": ThrottledEventsThreshold(max_throttled_events_threshold=0, runbook_link=runbook("registry-table"))},
            add_write_throttled_events_count_alarm={"Throttles": ThrottledEventsThreshold(max_throttled_events_threshold=0, runbook_link=runbook("registry-table"))},
        )
        # A share of requests API Gateway answered with a 4xx (its 4XXError metric's average): clients
        # with a wrong key or body, in numbers that mean an integration broke, not one bad request.
        facade.monitor_custom(
            alarm_friendly_name="Api",
            human_readable_name="API client errors",
            metric_groups=[_alarmed(
                "API 4xx share of requests", "ClientErrorShare",
                cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name="4XXError", statistic="Average",
                                  dimensions_map={"ApiName": api.rest_api_name, "Stage": api.deployment_stage.stage_name},
                                  period=Duration.minutes(5)),
                above=API_4XX_SHARE_ALARM, runbook_slug="api-4xx-share",
            )],
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
                runbook_slug="decision-latency",
            )
            for strategy, budget in stage.budgets.items()
        ]
        primary_failure = _alarmed(
            "Primary failure rate (its answers that failed)", "PrimaryFailureRate",
            router_metric(metric_name="PrimaryFailure", statistic="Average", period=Duration.minutes(1)),
            above=PRIMARY_FAILURE_RATE_ALARM, runbook_slug="primary-failure-rate",
        )
        facade.monitor_custom(
            alarm_friendly_name="Router",
            human_readable_name="Router decisions",
            metric_groups=[
                *decision_latency,
                _alarmed("Fallback rate", "FallbackRate", router_metric(metric_name="Fallback", statistic="Average"),
                         above=FALLBACK_RATE_ALARM, runbook_slug="fallback-rate"),
                primary_failure,
                _alarmed("Invalid output rate (answers in no allowed form)", "InvalidOutputRate",
                         router_metric(metric_name="InvalidOutput", statistic="Average"),
                         above=INVALID_OUTPUT_RATE_ALARM, runbook_slug="invalid-output-rate"),
                _alarmed("Unexpected errors (bugs, bad configuration)", "UnexpectedErrors",
                         router_metric(metric_name="UnexpectedError", statistic="Sum"), above=0,
                         runbook_slug="unexpected-errors"),
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
                    runbook_slug="model-latency",
                )
                for component in component_names
            ] + [
                _component_sum(
                    stage, component, f"Model errors of {component} (4xx from the model, 5xx)", "ModelErrors",
                    "FILL(model, 0) + FILL(faults, 0)",
                    {"model": "InvocationModelErrors", "faults": "Invocation5XXErrors"},
                    Duration.minutes(1), "model-errors",
                )
                for component in component_names
            ] + [_refused_requests(stage, component) for component in component_names],
        )
        facade.monitor_custom(
            alarm_friendly_name="SageMakerGpu",
            human_readable_name="GPU memory of each component (%)",
            metric_groups=[
                CustomMetricGroup(
                    title=f"GPU memory of {component} (%)",
                    metrics=[cloudwatch.Metric(
                        namespace="/aws/sagemaker/InferenceComponents", metric_name="GPUMemoryUtilizationNormalized",
                        dimensions_map={"InferenceComponentName": component}, statistic="Maximum",
                        period=Duration.minutes(1),
                    )],
                )
                for component in component_names
            ],
        )
        self._unseen_tasks(stage, facade)
        self._escalation(stage, facade)
        if teacher is not None:
            self._capture(stage, facade, teacher)
        self.degraded = self._primary_degraded(stage, facade)
        self._alarm_handling(stage, ops_mode, failover_state, endpoint_arn)
        self._alarm_handling_health(facade)

    def _unseen_tasks(self, stage: StageConfig, facade: MonitoringFacade) -> None:
        """Live tasks the serving adapter was not trained on (the router's gauge, with each decision).
        A dashboard line, no alarm: a new task is a normal registry change, and what it costs in
        quality shows in TeacherAgreement; it says when to harvest and retrain."""
        adapter = stage.router_adapter or "base"
        facade.monitor_custom(
            alarm_friendly_name="Adapter",
            human_readable_name=f"Live tasks the serving adapter ({adapter}) was not trained on",
            metric_groups=[CustomMetricGroup(
                title=f"Unseen tasks ({adapter})",
                metrics=[cloudwatch.Metric(
                    namespace=METRICS_NAMESPACE, metric_name="UnseenTasks",
                    dimensions_map={"service": ROUTER_SERVICE, "adapter": adapter},
                    statistic="Maximum", period=Duration.minutes(5),
                )],
            )],
        )

    def _escalation(self, stage: StageConfig, facade: MonitoringFacade) -> None:
        """The share of the primary's answers held to a threshold that were escalated (`Escalated`, 1/0
        by adapter and strategy), a cost guard per strategy: over an hour with at least min_samples held
        answers, above the share the stage planned. A stage with no threshold publishes none (no data:
        no alarm). Escalations also count in the fallback rate (the fallback decided them) and in the
        decision latency (primary plus fallback: config.P90_OVER_BUDGET_SHARE bounds the plan)."""
        confidence, adapter, hour = stage.confidence, stage.router_adapter or "base", Duration.hours(1)

        def escalated(statistic: str, strategy: Strategy) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=METRICS_NAMESPACE, metric_name="Escalated",
                dimensions_map={"service": ROUTER_SERVICE, "adapter": adapter, "strategy": strategy.value},
                statistic=statistic, period=hour,
            )

        def judged(strategy: Strategy) -> CustomMetricGroup:
            # The hour's share where it holds at least min_samples answers, else 0 (no verdict on a
            # handful): IF(TS comparison S, TS, S), documented metric math.
            title = (f"Escalated share, {adapter} / {strategy.value} (hour, at least {confidence.min_samples} "
                     f"answers; planned {confidence.planned_escalated_share:g})")
            share = cloudwatch.MathExpression(
                expression=f"IF(answers >= {confidence.min_samples}, share, 0)",
                using_metrics={"share": escalated("Average", strategy), "answers": escalated("SampleCount", strategy)},
                period=hour,
                label=title,
            )
            return _alarmed(title, f"EscalatedShare-{strategy.value}", share, above=confidence.planned_escalated_share,
                            runbook_slug="escalated-share", datapoints=1)

        facade.monitor_custom(
            alarm_friendly_name="Escalation",
            human_readable_name="Escalation of the primary's doubtful answers (low_confidence)",
            metric_groups=[judged(strategy) for strategy in Strategy],
        )

    def _capture(self, stage: StageConfig, facade: MonitoringFacade, teacher: lambda_.IFunction) -> None:
        """Quality in production (docs/capture.md), on every stage that measures: the primary's agreement
        with the teacher (the model's own, the kept answers', and by confidence band: the live
        reliability curve), the router's sends, the teacher function and its deliveries."""
        capture = stage.capture
        adapter, strategy = stage.router_adapter or "base", stage.default_strategy.value
        hour = Duration.hours(1)

        def agreement(statistic: str, strategy_value: str, name: str = TEACHER_AGREEMENT, **dimensions: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=METRICS_NAMESPACE, metric_name=name,
                dimensions_map={"service": TEACHER_SERVICE, "adapter": adapter, "strategy": strategy_value, **dimensions},
                statistic=statistic, period=hour,
            )

        def by_strategy(title: str, statistic: str, name: str) -> CustomMetricGroup:
            return CustomMetricGroup(
                title=title, metrics=[agreement(statistic, each.value, name).with_(label=each.value) for each in stage.budgets],
            )

        def reliability(strategy_value: str, statistic: str, title: str) -> CustomMetricGroup:
            # A bar per band over the dashboard's time range: the curve a threshold is read against. Each
            # band's metric exists once a turn of it was published (metrics by adapter, strategy and band).
            return CustomMetricGroup(
                title=title,
                metrics=[agreement(statistic, strategy_value, TEACHER_AGREEMENT_BY_CONFIDENCE, **{BAND_DIMENSION: band})
                         .with_(label=band) for band in CONFIDENCE_BANDS],
                graph_widget_type=GraphWidgetType.BAR,
                graph_widget_set_period_to_time_range=True,
                graph_widget_axis=cloudwatch.YAxisProps(min=0, max=1) if statistic == "Average" else None,
            )

        # The hour's agreement where it has at least min_samples uniformly sampled turns, else 1 (no
        # verdict on a handful): IF(TS comparison S, TS, S), documented metric math. One alarm, for the
        # adapter the router serves and the stage's default strategy, which most turns use; the
        # others are on the dashboard.
        title = f"Teacher agreement, {adapter} / {strategy} (hour, at least {capture.min_samples} samples)"
        judged = cloudwatch.MathExpression(
            expression=f"IF(samples >= {capture.min_samples}, agreement, 1)",
            using_metrics={"agreement": agreement("Average", strategy), "samples": agreement("SampleCount", strategy)},
            period=hour,
            label=title,
        )
        deliveries = functools.partial(cloudwatch.Metric, namespace=METRICS_NAMESPACE, statistic="Sum",
                                       dimensions_map={"service": TEACHER_SERVICE}, period=Duration.minutes(5))
        facade.monitor_custom(
            alarm_friendly_name="Capture",
            human_readable_name="Quality in production (the teacher, captured turns)",
            metric_groups=[
                CustomMetricGroup(title=title, metrics=[CustomMetricWithAlarm(
                    alarm_friendly_name="TeacherAgreement",
                    metric=judged,
                    add_alarm={"Threshold": CustomThreshold(
                        threshold=capture.min_agreement,
                        comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                        treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING,
                        datapoints_to_alarm=1, evaluation_periods=1,  # an hour is already the judgement
                        runbook_link=runbook("teacher-agreement"),
                    )},
                )]),
                by_strategy("Teacher agreement by strategy, every primary answer (hour)", "Average", TEACHER_AGREEMENT),
                by_strategy("Teacher agreement by strategy, the answers the primary kept (hour)", "Average",
                            TEACHER_AGREEMENT_KEPT),
                by_strategy("Uniform samples the teacher judged (hour)", "SampleCount", TEACHER_AGREEMENT),
                *(group for each in stage.budgets for group in (
                    reliability(each.value, "Average", f"Live reliability, {each.value}: teacher agreement by confidence band"),
                    reliability(each.value, "SampleCount", f"Live reliability, {each.value}: samples by confidence band"),
                )),
                _alarmed(
                    "Capture dropped (share of sampled turns not sent in time)", "CaptureDroppedRate",
                    cloudwatch.Metric(namespace=METRICS_NAMESPACE, metric_name="CaptureDropped",
                                      dimensions_map={"service": ROUTER_SERVICE}, statistic="Average",
                                      period=Duration.minutes(5)),
                    above=CAPTURE_DROPPED_RATE_ALARM, runbook_slug="capture-dropped",
                ),
                CustomMetricGroup(
                    title="Capture send latency p90 (ms)",
                    metrics=[cloudwatch.Metric(namespace=METRICS_NAMESPACE, metric_name="CaptureSendLatency",
                                               dimensions_map={"service": ROUTER_SERVICE}, statistic="p90",
                                               period=Duration.minutes(5))],
                ),
                CustomMetricGroup(
                    title="Teacher failures by cause",
                    metrics=[cloudwatch.Metric(namespace=METRICS_NAMESPACE, metric_name="TeacherFailed",
                                               dimensions_map={"service": TEACHER_SERVICE, "cause": cause},
                                               statistic="Sum", period=Duration.minutes(5), label=cause)
                             for cause in TEACHER_FAILURE_CAUSES],
                ),
                # Lambda delivered an event again (skipped), or the deliveries table failed and a turn was
                # handled unchecked (a duplicate then would count twice): teacher_deliveries.py.
                CustomMetricGroup(
                    title="Teacher deliveries: duplicates skipped, turns handled unchecked",
                    metrics=[deliveries(metric_name="RecordDuplicate", label="duplicates skipped"),
                             deliveries(metric_name="DeliveryUnchecked", label="handled unchecked")],
                ),
                # Lambda's queue of asynchronous invocations: one teacher at a time, the rest wait.
                CustomMetricGroup(
                    title="Teacher queue: oldest event's age (ms)",
                    metrics=[teacher.metric("AsyncEventAge", statistic="Maximum", period=Duration.minutes(5))],
                ),
                # An event dropped: its invocation failed (never tried again) or it waited past the maximum
                # event age. Where records are stored it went to the on-failure destination first; where
                # none are, this count is its only trace. The first one alarms.
                _alarmed("Teacher events dropped", "TeacherEventsDropped",
                         teacher.metric("AsyncEventsDropped", statistic="Sum", period=Duration.minutes(5)),
                         above=0, runbook_slug="teacher-events-dropped", datapoints=1),
                # Only where the teacher has a destination (the stage stores records: infra/capture.py): an event
                # Lambda could not deliver there is lost with its conversation. The first one alarms.
                *([_alarmed("Teacher destination failures", "TeacherDestinationFailures",
                            teacher.metric("DestinationDeliveryFailures", statistic="Sum", period=Duration.minutes(5)),
                            above=0, runbook_slug="teacher-destination-failures", datapoints=1)]
                  if capture.stores_records else []),
            ],
        )
        # Its errors are bugs or a failed write (the teacher's own failures are in the record). Its
        # throttles are by design: concurrency 1, Lambda's async queue retries them; shown, not alarmed.
        facade.monitor_lambda_function(
            lambda_function=teacher,
            alarm_friendly_name="Teacher",
            human_readable_name="Teacher function",
            add_fault_count_alarm={"Errors": ErrorCountThreshold(max_error_count=0, runbook_link=runbook("teacher-errors"))},
        )

    def _alarm_handling_health(self, facade: MonitoringFacade) -> None:
        """The alarm handler's own warnings: a notification it refused, a parameter no version writes. Each
        is rare and means someone or something else is at work (a publisher on the topic, a hand edit):
        one in five minutes alarms."""
        handling = functools.partial(cloudwatch.Metric, namespace=METRICS_NAMESPACE, statistic="Sum",
                                     dimensions_map={"service": ALARM_HANDLER_SERVICE}, period=Duration.minutes(5))
        facade.monitor_custom(
            alarm_friendly_name="AlarmHandling",
            human_readable_name="Alarm handling",
            metric_groups=[
                _alarmed("Notifications skipped", "NotificationsSkipped", handling(metric_name="NotificationsSkipped"),
                         above=0, runbook_slug="notifications-skipped", datapoints=1),
                _alarmed("Parameters malformed", "ParameterMalformed", handling(metric_name="ParameterMalformed"),
                         above=0, runbook_slug="parameter-malformed", datapoints=1),
            ],
        )

    def _primary_degraded(self, stage: StageConfig, facade: MonitoringFacade) -> cloudwatch.CompositeAlarm:
        """The primary's own health: its model latency, its model errors, or the share of its answers
        that failed. Fallbacks it did not cause (ops_mode, circuit_open: consequences of a failover;
        no_capacity: scaled to zero) are not in PrimaryFailure, so they never feed it."""
        feeding = [
            created.alarm for created in facade.created_alarms()
            if any(part in created.alarm_name for part in ("ModelLatencyP90-", "ModelErrors-", "PrimaryFailureRate"))
        ]
        self.degraded_children = feeding
        degraded = cloudwatch.CompositeAlarm(
            self,
            "PrimaryDegraded",
            composite_alarm_name=primary_degraded_name(stage),
            alarm_description="The self-hosted model is slow, failing or answering wrongly: the alarm handling "
            f"routes through OpenAI until it clears. Runbook: {runbook('primary-degraded')}",
            alarm_rule=cloudwatch.AlarmRule.any_of(
                *(cloudwatch.AlarmRule.from_alarm(alarm, cloudwatch.AlarmState.ALARM) for alarm in feeding)
            ),
        )
        degraded.add_alarm_action(cw_actions.SnsAction(self.alarm_topic))
        degraded.add_ok_action(cw_actions.SnsAction(self.alarm_topic))
        return degraded

    def _alarm_handling(
        self, stage: StageConfig, ops_mode: ssm.IStringParameter, failover_state: ssm.IStringParameter, endpoint_arn: str
    ) -> None:
        """handlers/alarms.py: the composite alarm's changes move the router's mode; a schedule reconciles,
        applies held fail-backs and probes the primary while failed over. One at a time (reserved concurrency 1)."""
        degraded_name = primary_degraded_name(stage)
        function, role = bundled_function(
            self,
            stage,
            "AlarmHandler",
            description="TaskRouter: alarm handling (operations mode on the primary-degraded alarm; primary probe)",
            handler="taskrouter.handlers.alarms.handler",
            memory_size=512,
            timeout=Duration.seconds(30),
            reserved_concurrent_executions=1,
            traced=False,  # X-Ray's actions take no resource: this role names every one it may touch
            environment={
                "POWERTOOLS_SERVICE_NAME": ALARM_HANDLER_SERVICE,
                "TASKROUTER_STAGE": stage.name,
                "TASKROUTER_OPS_MODE_PARAMETER": ops_mode.parameter_name,
                "TASKROUTER_FAILOVER_STATE_PARAMETER": failover_state.parameter_name,
                "TASKROUTER_ALARM_TOPIC_ARN": self.alarm_topic.topic_arn,
                "TASKROUTER_DEGRADED_ALARM_NAME": degraded_name,
                "TASKROUTER_DEGRADED_CHILD_ALARMS": ",".join(alarm.alarm_name for alarm in self.degraded_children),
                "TASKROUTER_FAILBACK_HOLD_S": str(int(DEFAULT_HOLD_S)),
                "TASKROUTER_SAGEMAKER_ENDPOINT": stage.endpoint_name,
                "TASKROUTER_SAGEMAKER_COMPONENT": stage.router_component_name,
                "TASKROUTER_PRIMARY_TIMEOUT_MS": str(stage.zero_shot.primary_timeout_ms),
                "TASKROUTER_PRIMARY_METRICS_SERVICE": ROUTER_SERVICE,
            },
        )
        # Its state and the mode, nothing else of SSM; the topic, nothing else of SNS; the endpoint.
        role.add_to_policy(iam.PolicyStatement(
            actions=["ssm:GetParameter", "ssm:PutParameter"],
            resources=[ops_mode.parameter_arn, failover_state.parameter_arn],
        ))
        role.add_to_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=[self.alarm_topic.topic_arn]))
        self.topic_key.grant(role, "kms:GenerateDataKey", "kms:Decrypt")  # the topic is encrypted
        role.add_to_policy(iam.PolicyStatement(actions=["sagemaker:InvokeEndpoint"], resources=[endpoint_arn]))
        # The composite alarm's state, read at each tick through its children's: DescribeAlarms returns a
        # composite alarm only to a caller allowed it on every resource (CloudWatch API reference), and
        # this role names each resource it touches.
        role.add_to_policy(iam.PolicyStatement(
            actions=["cloudwatch:DescribeAlarms"], resources=[alarm.alarm_arn for alarm in self.degraded_children],
        ))
        # Only the composite alarm's notifications reach it (its concurrency is one): not the other
        # alarms firing with it, nor its own announcements.
        self.alarm_topic.add_subscription(subscriptions.LambdaSubscription(
            function,
            filter_policy_with_message_body={
                "AlarmName": sns.FilterOrPolicy.filter(sns.SubscriptionFilter.string_filter(allowlist=[degraded_name]))
            },
        ))
        events.Rule(
            self,
            "AlarmHandlingSchedule",
            description=f"TaskRouter {stage.name}: held fail-backs, and the primary's probe while failed over",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(function, retry_attempts=0)],
        )
        self.alarm_handler = function


def _component_counts(component: str, metrics: dict[str, str], period: Duration) -> dict[str, cloudwatch.IMetric]:
    """SageMaker's per-component counts (Sum), by the ids an expression names them with."""
    return {
        key: cloudwatch.Metric(namespace="AWS/SageMaker", metric_name=metric,
                               dimensions_map={"InferenceComponentName": component}, statistic="Sum", period=period)
        for key, metric in metrics.items()
    }


def _component_sum(
    stage: StageConfig, component: str, title: str, name: str, expression: str, metrics: dict[str, str],
    period: Duration, runbook_slug: str,
) -> CustomMetricGroup:
    """An alarm on an expression over SageMaker's per-component counts, above zero."""
    return _component_alarm(stage, component, title, name, cloudwatch.MathExpression(
        expression=expression, using_metrics=_component_counts(component, metrics, period), period=period, label=title,
    ), runbook_slug)


def _refused_requests(stage: StageConfig, component: str) -> CustomMetricGroup:
    """Requests the endpoint refused (Invocation4XXErrors) other than those refused for want of a copy
    (NoCapacityInvocationFailures: scaled to zero, which is no refusal), never under 0.

    Metric math as CloudWatch documents it only (CloudWatch User Guide, "Using metric math"): arithmetic
    on two time series treats a missing value as 0, so no FILL; IF in its documented form
    IF(TS comparison S, TS, S) floors the difference (MAX takes a time series or an array of them, not a
    scalar: an expression PutMetricAlarm refused would roll the whole stack back)."""
    period = Duration.minutes(5)
    title = f"Requests {component} refused (4xx, no-capacity aside)"
    excess = cloudwatch.MathExpression(
        expression="refused - asleep",
        using_metrics=_component_counts(
            component, {"refused": "Invocation4XXErrors", "asleep": "NoCapacityInvocationFailures"}, period
        ),
        period=period,
    )
    return _component_alarm(stage, component, title, "RefusedRequests", cloudwatch.MathExpression(
        expression="IF(excess > 0, excess, 0)", using_metrics={"excess": excess}, period=period, label=title,
    ), "model-requests-refused")


def _component_alarm(
    stage: StageConfig, component: str, title: str, name: str, metric: cloudwatch.IMetric, runbook_slug: str
) -> CustomMetricGroup:
    return _alarmed(title, f"{name}-{component.removeprefix(f'taskrouter-{stage.name}-')}", metric,
                    above=0, runbook_slug=runbook_slug)


def _alarmed(
    title: str, name: str, metric: cloudwatch.IMetric, *, above: float, runbook_slug: str, datapoints: int | None = None
) -> CustomMetricGroup:
    """A dashboard group of one metric, alarming when it is above `above` (no data: no alarm); over the
    facade's 3 of 5 periods, or `datapoints` of as many where one is enough."""
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
                        runbook_link=runbook(runbook_slug),
                        datapoints_to_alarm=datapoints,
                        evaluation_periods=datapoints,
                    )
                },
            )
        ],
    )
