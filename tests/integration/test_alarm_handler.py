"""The alarm handling (handlers/alarms.py) against moto's SSM and SNS, fed CloudWatch alarm
notifications as SNS delivers them to Lambda.

The payloads follow AWS's documented shapes: the Lambda event of an SNS subscription
(`Records[].Sns.Message`, Lambda Developer Guide, "Using Lambda with Amazon SNS"), whose `Message`
is the JSON CloudWatch publishes for an alarm state change (CloudWatch User Guide, "Using Amazon SNS
to notify": AlarmName, NewStateValue, OldStateValue, NewStateReason, StateChangeTime as
`2026-11-25T17:00:00.000+0000`, `Trigger` for a metric alarm; `AlarmRule` and `TriggeringChildren`
for a composite alarm). A state value is one of OK, ALARM and INSUFFICIENT_DATA (CloudWatch API
Reference, `MetricAlarm` and `CompositeAlarm`: StateValue)."""

from __future__ import annotations

import importlib
import io
import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from moto import mock_aws

from tests.integration.conftest import COMPONENT_NAME
from tests.integration.ops_stage import create_stage_stacks
from tests.integration.servers import SageMakerRuntimeDouble

STAGE = "qa"
DEGRADED = f"taskrouter-{STAGE}-primary-degraded"
T0 = datetime(2026, 11, 25, 17, 0, tzinfo=timezone.utc)
HOLD_S = 900


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


def composite(state: str, at: datetime, old: str = "OK", name: str = DEGRADED) -> dict:
    return {
        "AlarmName": name,
        "AlarmDescription": "The self-hosted model is slow... Runbook: docs/runbook.md#primary-degraded",
        "AWSAccountId": "123456789012",
        "AlarmConfigurationUpdatedTimestamp": _time(T0 - timedelta(days=1)),
        "NewStateValue": state,
        "NewStateReason": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{STAGE}-ModelLatencyP90-base transitioned to {state}",
        "StateChangeTime": _time(at),
        "Region": "US East (N. Virginia)",
        "AlarmArn": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}",
        "OldStateValue": old,
        "OKActions": ["arn:aws:sns:us-east-1:123456789012:alarms"],
        "AlarmActions": ["arn:aws:sns:us-east-1:123456789012:alarms"],
        "InsufficientDataActions": [],
        "AlarmRule": f'ALARM("taskrouter-{STAGE}-SageMaker-ModelLatencyP90-base-Threshold")',
        "TriggeringChildren": [{
            "Arn": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:taskrouter-{STAGE}-SageMaker-ModelLatencyP90-base-Threshold",
            "State": {"Value": state, "Timestamp": _time(at)},
        }],
    }


def metric_alarm(state: str, at: datetime) -> dict:
    return {
        "AlarmName": f"taskrouter-{STAGE}-Api-Fault-Count-Faults", "AWSAccountId": "123456789012",
        "NewStateValue": state, "OldStateValue": "OK", "NewStateReason": "Threshold Crossed", "StateChangeTime": _time(at),
        "Region": "US East (N. Virginia)", "AlarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:x",
        "Trigger": {"MetricName": "5XXError", "Namespace": "AWS/ApiGateway", "StatisticType": "Statistic",
                    "Statistic": "SUM", "Period": 300, "EvaluationPeriods": 5, "ComparisonOperator": "GreaterThanThreshold",
                    "Threshold": 0.0, "TreatMissingData": "notBreaching", "Dimensions": []},
    }


def sns_event(*messages: dict | str) -> dict:
    return {"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0",
        "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:alarms:0b6941c3-f04d-4d3e-a66d-b1df00e1e381",
        "Sns": {
            "Type": "Notification", "MessageId": f"95df01b4-ee98-5cb9-9903-4c221d41eb5{n}",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:alarms", "Subject": "ALARM: ...",
            "Message": message if isinstance(message, str) else json.dumps(message),
            "Timestamp": "2026-11-25T17:00:01.000Z", "SignatureVersion": "1", "Signature": "EXAMPLE",
            "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/cert.pem", "UnsubscribeUrl": "https://sns/unsubscribe",
            "MessageAttributes": {},
        },
    } for n, message in enumerate(messages)]}


SCHEDULE = {"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now


def _now_real(world) -> datetime:
    """The handler's clock set to the real one: moto stamps the alarms' changes with it."""
    now = datetime.now(timezone.utc)
    world.time.now = now.timestamp()
    return now


@pytest.fixture
def world(monkeypatch, fake_aws_credentials):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env = {
        "TASKROUTER_STAGE": STAGE, "TASKROUTER_OPS_MODE_PARAMETER": f"/taskrouter/{STAGE}/ops-mode",
        "TASKROUTER_FAILOVER_STATE_PARAMETER": f"/taskrouter/{STAGE}/failover-state",
        "TASKROUTER_DEGRADED_ALARM_NAME": DEGRADED, "TASKROUTER_FAILBACK_HOLD_S": str(HOLD_S),
        "TASKROUTER_DEGRADED_CHILD_ALARMS": ",".join(CHILDREN),
        "POWERTOOLS_METRICS_NAMESPACE": "TaskRouter", "POWERTOOLS_SERVICE_NAME": "taskrouter-alarm-handling",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TASKROUTER_SAGEMAKER_ENDPOINT", raising=False)
    with mock_aws():
        sns = boto3.client("sns")
        topic = sns.create_topic(Name="alarms")["TopicArn"]
        sqs = boto3.client("sqs")
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]  # what the topic's subscribers receive
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
        monkeypatch.setenv("TASKROUTER_ALARM_TOPIC_ARN", topic)
        ssm = boto3.client("ssm")
        ssm.put_parameter(Name=env["TASKROUTER_OPS_MODE_PARAMETER"], Value="primary_first", Type="String")
        from taskrouter.handlers import alarms

        module = importlib.reload(alarms)
        clock = Clock()
        monkeypatch.setattr(module.time, "time", clock)
        # Powertools keeps the stream its first Logger of the service was given: this test's, here
        log = io.StringIO()
        monkeypatch.setattr(module.logger.registered_handler, "stream", log)

        class World:
            handler = module
            time = clock

            @staticmethod
            def mode() -> str:
                return ssm.get_parameter(Name=env["TASKROUTER_OPS_MODE_PARAMETER"])["Parameter"]["Value"]

            @staticmethod
            def announcements() -> list[dict]:
                got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
                for message in got:
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
                return [json.loads(message["Body"]) for message in got]

            @staticmethod
            def logged() -> list[dict]:
                lines = [json.loads(line) for line in log.getvalue().splitlines()]
                log.seek(0)
                log.truncate()
                return lines

            @staticmethod
            def deliver(*messages) -> dict:
                return module.handler(sns_event(*messages), None)

        yield World


def test_alarm_fails_over_at_once_and_ok_fails_back_only_after_the_hold(world):
    world.deliver(composite("ALARM", T0))
    assert world.mode() == "openai_only"
    (said,) = world.announcements()
    assert said["source"] == "taskrouter-alarm-handling" and said["to"] == "openai_only" and said["from"] == "primary_first"
    world.time.now += 60
    world.deliver(composite("OK", T0 + timedelta(minutes=1), old="ALARM"))
    assert world.mode() == "openai_only" and world.announcements() == []  # held: 60 s < 900 s
    world.time.now += HOLD_S - 120
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "openai_only"  # not due yet
    world.time.now += 120
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "primary_first"
    (said,) = world.announcements()
    assert said["to"] == "primary_first"


def test_duplicates_and_out_of_order_notifications_change_nothing(world):
    world.deliver(composite("ALARM", T0 + timedelta(minutes=5)))
    world.announcements()
    world.time.now += 2 * HOLD_S
    # an OK older than the ALARM applied (SNS delivered it late), then the ALARM again (a duplicate)
    world.deliver(composite("OK", T0 + timedelta(minutes=4)), composite("ALARM", T0 + timedelta(minutes=5)))
    assert world.mode() == "openai_only" and world.announcements() == []
    world.deliver(composite("OK", T0 + timedelta(minutes=20), old="ALARM"))
    assert world.mode() == "primary_first"


def test_flapping_inside_the_hold_keeps_the_router_on_openai(world):
    world.deliver(composite("ALARM", T0))
    for minute in range(1, 10):
        world.time.now += 60
        state = "OK" if minute % 2 else "ALARM"
        world.deliver(composite(state, T0 + timedelta(minutes=minute)))
        world.handler.handler(SCHEDULE, None)
        assert world.mode() == "openai_only"
    assert len(world.announcements()) == 1  # one transition, announced once
    # the last ALARM came at minute 8, then OK at minute 9: due a hold after that ALARM, not before
    world.time.now = T0.timestamp() + 8 * 60 + HOLD_S - 1
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "openai_only"
    world.time.now += 1
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "primary_first"


def test_other_alarms_own_announcements_and_junk_are_skipped(world):
    world.deliver(composite("ALARM", T0))
    (own,) = world.announcements()
    result = world.deliver(metric_alarm("ALARM", T0 + timedelta(minutes=1)), json.dumps(own), "not json", {"x": 1},
                           composite("ALARM", T0 + timedelta(minutes=1), name="taskrouter-qa-other"))
    assert result == {"applied": 0, "skipped": 5} and world.announcements() == []


def test_an_idle_endpoints_insufficient_data_is_not_degraded(world):
    world.deliver(composite("INSUFFICIENT_DATA", T0, old="OK"))
    assert world.mode() == "primary_first" and world.announcements() == []


def test_an_operators_override_is_never_undone_by_the_handler(world):
    from taskrouter.core.resilience import OpsMode
    from taskrouter.operations.failover import set_override

    ops = world.handler.OPERATIONS
    ops.set_mode(OpsMode.OPENAI_ONLY)
    ops.save(set_override(ops.state(), OpsMode.OPENAI_ONLY, "oncall@example.com", "model upgrade", _time(T0)))
    world.time.now += 2 * HOLD_S
    world.deliver(composite("OK", T0 + timedelta(minutes=1), old="ALARM"))
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "openai_only"
    (said,) = world.announcements()
    assert "override" in said["note"] and said["subject"] == "alarm handling held back by an override"
    assert ops.state().alarm_state == "OK"  # recorded, for when the operator hands back


def test_a_failed_over_router_keeps_producing_the_primarys_health_data(world, sagemaker, monkeypatch, capsys):
    """While openai_only, each tick probes the primary through the router's own prompt and parser and
    publishes PrimaryFailure under the router's service, the metric the composite alarm reads."""
    monkeypatch.setenv("TASKROUTER_SAGEMAKER_ENDPOINT", "taskrouter-qa")
    monkeypatch.setenv("TASKROUTER_SAGEMAKER_COMPONENT", COMPONENT_NAME)
    monkeypatch.setenv("TASKROUTER_PRIMARY_TIMEOUT_MS", "2000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", sagemaker.url)
    monkeypatch.setattr(world.handler, "_probe_backend", None)
    world.handler.handler(SCHEDULE, None)
    assert sagemaker.requests == []  # primary_first: the router's own traffic measures it
    world.deliver(composite("ALARM", T0))
    capsys.readouterr()
    answered = SageMakerRuntimeDouble.answer("meeting_recap")
    sagemaker.script(answered, answered, answered, SageMakerRuntimeDouble.model_error(), answered, answered)
    assert world.handler.handler(SCHEDULE, None)["probed"] is True  # three probes a tick
    assert world.handler.handler(SCHEDULE, None)["probed"] is False
    (probe, *_) = sagemaker.requests
    body = json.loads(probe.raw_body)
    assert body["messages"][-1]["role"] == "user" and "structured_outputs" in body
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    published = [m for m in metrics if "PrimaryFailure" in m]
    assert [m["PrimaryFailure"] for m in published] == [[0.0]] * 3 + [[1.0], [0.0], [0.0]]
    assert all(m["service"] == "taskrouter-router" for m in published)  # the router's metric, as it publishes it
    assert all(m["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TaskRouter" for m in published)


CHILDREN = [f"taskrouter-{STAGE}-Router-PrimaryFailureRate-Threshold", f"taskrouter-{STAGE}-SageMaker-ModelLatencyP90-base-Threshold"]


def _cloudwatch_alarm(state: str) -> None:
    """The composite alarm's children as CloudWatch reports them to DescribeAlarms (moto): `state` on
    the first, OK on the others."""
    cloudwatch = boto3.client("cloudwatch")
    for name in CHILDREN:
        cloudwatch.put_metric_alarm(AlarmName=name, MetricName="PrimaryFailure", Namespace="TaskRouter", Statistic="Average",
                                    Period=60, EvaluationPeriods=1, Threshold=0.25, ComparisonOperator="GreaterThanThreshold")
        cloudwatch.set_alarm_state(AlarmName=name, StateValue=state if name == CHILDREN[0] else "OK", StateReason="test")


def test_a_lost_ok_notification_is_put_right_by_the_tick(world):
    world.deliver(composite("ALARM", _now_real(world) - timedelta(hours=1)))
    _cloudwatch_alarm("OK")  # its OK notification never arrived (dropped after Lambda's retries)
    world.time.now += HOLD_S + 1
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "primary_first"


def test_a_mode_changed_behind_the_handlings_back_is_put_right(world):
    _cloudwatch_alarm("ALARM")
    _now_real(world)
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "openai_only"  # the lost ALARM, seen at a tick
    world.announcements()
    # the mode written by hand (not by `taskrouter ops mode set`), the alarm still in ALARM
    boto3.client("ssm").put_parameter(Name=f"/taskrouter/{STAGE}/ops-mode", Value="primary_first", Type="String", Overwrite=True)
    world.time.now += 60
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "openai_only"


def test_the_hold_counts_from_the_last_alarm_too(world):
    world.deliver(composite("ALARM", T0))
    world.time.now += 60
    world.deliver(composite("OK", T0 + timedelta(minutes=1)))
    world.time.now = T0.timestamp() + 14 * 60
    world.deliver(composite("ALARM", T0 + timedelta(minutes=14)))
    world.time.now = T0.timestamp() + 15.5 * 60
    world.deliver(composite("OK", T0 + timedelta(minutes=15, seconds=30)))
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "openai_only"  # 90 s after an ALARM: held
    world.time.now = T0.timestamp() + 14 * 60 + HOLD_S
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "primary_first"


def test_no_probe_under_an_operators_override(world, sagemaker, monkeypatch):
    from taskrouter.core.resilience import OpsMode
    from taskrouter.operations.failover import set_override

    monkeypatch.setenv("TASKROUTER_SAGEMAKER_ENDPOINT", "taskrouter-qa")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", sagemaker.url)
    monkeypatch.setattr(world.handler, "_probe_backend", None)
    ops = world.handler.OPERATIONS
    ops.save(set_override(ops.state(), OpsMode.OPENAI_ONLY, "dana", "maintenance", _time(T0)))
    ops.set_mode(OpsMode.OPENAI_ONLY)
    assert world.handler.handler(SCHEDULE, None)["probed"] is None and sagemaker.requests == []


def _stored_state() -> dict:
    return json.loads(boto3.client("ssm").get_parameter(Name=f"/taskrouter/{STAGE}/failover-state")["Parameter"]["Value"])


def _metrics(out: str) -> list[dict]:
    """The metrics Powertools printed (CloudWatch's embedded metric format)."""
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


def test_a_notification_dated_ahead_of_now_is_ignored_and_not_recorded(world):
    """A StateChangeTime more than 5 minutes after the handler's clock is no change CloudWatch has made
    (a forged message, or a clock gone wrong): recorded, it would make every real change look older."""
    world.deliver(composite("ALARM", T0))
    world.time.now += HOLD_S + 60
    world.deliver(composite("ALARM", T0 + timedelta(days=365)))  # a forged one
    assert _stored_state()["alarm_changed_at"] == T0.isoformat()
    world.deliver(composite("OK", T0 + timedelta(minutes=16), old="ALARM"))
    assert world.mode() == "primary_first"  # the real OK still fails back
    # a clock a little ahead (under 5 minutes) is CloudWatch's own: applied
    world.deliver(composite("ALARM", T0 + timedelta(minutes=16 + 4)))
    assert world.mode() == "openai_only"


def test_a_state_value_cloudwatch_never_sends_is_skipped(world):
    """CloudWatch's alarms have three states (OK, ALARM, INSUFFICIENT_DATA): another value is no state
    change, and must not stand in the way of a real one."""
    skipped = world.deliver(composite("ALARMING", T0 + timedelta(minutes=1)))
    world.deliver(composite("ALARM", T0))  # older than the bogus one
    assert world.mode() == "openai_only"
    assert skipped == {"applied": 0, "skipped": 1}


def test_junk_records_are_skipped_counted_and_the_batch_goes_on(capsys, world):
    marker = "sk-never-logged-7f3c"
    junk = [
        json.dumps({"x": 1}),  # JSON, but no alarm notification
        json.dumps({"AlarmName": DEGRADED, "NewStateValue": "ALARM", "StateChangeTime": marker}),
        json.dumps({**composite("ALARM", T0), "AlarmName": [DEGRADED]}),
        "null",
        "[" * 100_000 + "]" * 100_000,  # json.loads raises RecursionError
        f"not json {marker}",
    ]
    capsys.readouterr()
    world.logged()
    result = world.deliver(*junk, composite("ALARM", T0))
    assert result == {"applied": 1, "skipped": len(junk)} and world.mode() == "openai_only"
    out, err = capsys.readouterr()
    logged = world.logged()
    assert marker not in out + err + json.dumps(logged)
    (counted,) = [line for line in logged if "skipped" in line]
    assert counted["skipped"] == len(junk)
    (metric,) = [line for line in _metrics(out) if "NotificationsSkipped" in line]
    assert metric["NotificationsSkipped"] == [float(len(junk))]


FIELDS = {"alarm_state", "alarm_changed_at", "mode", "mode_set_at", "last_alarm_at", "override"}


def _put(name: str, value: str) -> None:
    boto3.client("ssm").put_parameter(Name=f"/taskrouter/{STAGE}/{name}", Value=value, Type="String", Overwrite=True)


@pytest.mark.parametrize("alarm", ["ALARM", "OK"])
@pytest.mark.parametrize("value", ["OpenAI_only", "[]"])
def test_a_malformed_mode_parameter_is_reported_and_rewritten_by_the_next_tick(capsys, world, alarm, value):
    _cloudwatch_alarm(alarm)
    _now_real(world)
    _put("ops-mode", value)
    capsys.readouterr()
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == ("openai_only" if alarm == "ALARM" else "primary_first")  # what the alarm calls for
    assert any(line["level"] == "WARNING" and "malformed" in line["message"] and line["parameter"].endswith("ops-mode")
               for line in world.logged())
    assert any("ParameterMalformed" in line for line in _metrics(capsys.readouterr().out))
    (repaired,) = world.announcements()
    assert repaired["to"] == world.mode() and repaired["from"] == "malformed" and repaired["subject"] == "mode parameter repaired"


MALFORMED_STATES = [
    "[]", "{not json", "null",
    json.dumps({"alarm_state": "OK", "alarm_changed_at": "yesterday", "mode": "primary_first",
                "mode_set_at": None, "last_alarm_at": None, "override": None}),
    json.dumps({"alarm_state": "OK", "mode": "primary_first"}),  # an override's field lost: not "no override"
    json.dumps({"alarm_state": "OK", "alarm_changed_at": None, "mode": "OpenAI_only",
                "mode_set_at": None, "last_alarm_at": None, "override": None}),
]


@pytest.mark.parametrize("alarm", ["ALARM", "OK"])
@pytest.mark.parametrize("value", MALFORMED_STATES)
def test_a_malformed_state_parameter_is_reported_and_rebuilt_by_the_next_tick(capsys, world, alarm, value):
    _cloudwatch_alarm(alarm)
    _now_real(world)
    _put("failover-state", value)
    capsys.readouterr()
    world.handler.handler(SCHEDULE, None)
    assert any(line["level"] == "WARNING" and "malformed" in line["message"] and line["parameter"].endswith("failover-state")
               for line in world.logged())
    assert any("ParameterMalformed" in line for line in _metrics(capsys.readouterr().out))
    state = _stored_state()
    assert set(state) == FIELDS and state["alarm_state"] == alarm and state["override"] is None
    told = [said for said in world.announcements() if said["subject"] == "alarm handling state rebuilt"]
    assert len(told) == 1 and told[0]["parameter"].endswith("failover-state") and "override" in told[0]["note"]
    assert world.mode() == state["mode"] == ("openai_only" if alarm == "ALARM" else "primary_first")
    world.time.now += 60
    world.handler.handler(SCHEDULE, None)  # repaired: nothing more to report
    assert "malformed" not in json.dumps(world.logged())


def test_a_malformed_state_read_for_a_notification_is_rebuilt_too(world):
    _put("failover-state", "[]")
    world.deliver(composite("ALARM", T0))
    assert world.mode() == "openai_only" and _stored_state()["alarm_state"] == "ALARM"


def test_a_recorded_alarm_time_ahead_of_now_is_dropped_by_the_tick(world):
    """A state written before future-dated notifications were refused may hold one: the tick drops it,
    so that the alarm's real changes apply again."""
    now = _now_real(world)
    _cloudwatch_alarm("ALARM")
    _put("failover-state", json.dumps({"alarm_state": "OK", "alarm_changed_at": (now + timedelta(days=365)).isoformat(),
                                       "mode": "primary_first", "mode_set_at": None, "last_alarm_at": None, "override": None}))
    world.time.now += 60
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "openai_only" and _stored_state()["alarm_state"] == "ALARM"


@pytest.fixture
def ops(world):
    """`taskrouter ops ...` on the handler's stage: its stacks name the same parameters and topic."""
    from taskrouter.cli import main

    create_stage_stacks(STAGE, f"/taskrouter/{STAGE}/ops-mode", f"/taskrouter/{STAGE}/failover-state",
                        world.handler.OPERATIONS.topic_arn)
    return lambda *argv: main(["ops", *argv, "--stage", STAGE, "--region", "us-east-1"])


@pytest.mark.parametrize("alarm", ["ALARM", "OK"])
def test_set_auto_ends_the_override_drops_a_future_alarm_time_and_the_next_tick_follows_the_alarm(world, ops, alarm):
    """The state a forged notification left (before such were refused): the opposite of the alarm's
    state, dated a year ahead, under an operator's override."""
    now = _now_real(world)
    _cloudwatch_alarm(alarm)
    forged = "OK" if alarm == "ALARM" else "ALARM"
    an_hour_ago = now.timestamp() - 3600
    _put("failover-state", json.dumps({
        "alarm_state": forged, "alarm_changed_at": (now + timedelta(days=365)).isoformat(), "mode": "openai_only",
        "mode_set_at": an_hour_ago, "last_alarm_at": an_hour_ago,
        "override": {"mode": "openai_only", "by": "dana", "reason": "model upgrade", "at": _time(now - timedelta(hours=1))},
    }))
    _put("ops-mode", "openai_only")
    assert ops("mode", "set", "auto") == 0
    state = _stored_state()
    assert state["override"] is None and state["alarm_changed_at"] is None
    assert world.mode() == state["mode"] == ("openai_only" if forged == "ALARM" else "primary_first")  # as recorded
    world.time.now += 60
    world.handler.handler(SCHEDULE, None)
    state = _stored_state()
    assert world.mode() == state["mode"] == ("openai_only" if alarm == "ALARM" else "primary_first")
    assert state["alarm_state"] == alarm and state["override"] is None
    assert datetime.fromisoformat(state["alarm_changed_at"]).timestamp() <= world.time.now


def test_a_state_the_first_version_wrote_is_no_malformed_one(world):
    """Without the fields added since (last_alarm_at), with one since dropped (pending_failback): read
    as it is, the operator's override with it."""
    _put("failover-state", json.dumps({
        "alarm_state": "OK", "alarm_changed_at": None, "mode": "openai_only", "mode_set_at": T0.timestamp(),
        "pending_failback": False, "override": {"mode": "openai_only", "by": "dana", "reason": "upgrade", "at": _time(T0)},
    }))
    _put("ops-mode", "openai_only")
    world.time.now += 2 * HOLD_S
    world.handler.handler(SCHEDULE, None)
    assert world.mode() == "openai_only" and _stored_state()["override"]["by"] == "dana"
    assert not [line for line in world.logged() if "malformed" in line["message"]]
