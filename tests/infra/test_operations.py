"""Alarm handling in the templates: the composite "primary degraded" alarm and what feeds it, the
handler's subscription, schedule and least-privilege role; every alarm's description linking an
existing section of docs/runbook.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

from infra.config import ROOT

RUNBOOK = ROOT / "docs" / "runbook.md"


def _resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _sections(path: Path) -> set[str]:
    return {_slug(line[3:]) for line in path.read_text().splitlines() if line.startswith("## ")}


def test_every_alarm_links_an_existing_runbook_section(stage):
    sections = _sections(RUNBOOK)
    alarms = [
        (stack, logical, alarm["Properties"])
        for stack, template in stage.templates.items()
        for kind in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")
        for logical, alarm in _resources(template, kind).items()
    ]
    assert len(alarms) >= 15
    for stack, logical, props in alarms:
        description = json.dumps(props.get("AlarmDescription", ""))
        links = re.findall(r"docs/runbook\.md#([a-z0-9-]+)", description)
        assert links, f"{stack}/{logical}: its description links no runbook section"
        assert set(links) <= sections, f"{stack}/{logical}: {links} not among the runbook's sections"


def test_primary_degraded_is_fed_by_the_primarys_own_health_only(stage):
    monitoring = stage.templates["Monitoring"]
    (degraded,) = _resources(monitoring, "AWS::CloudWatch::CompositeAlarm").values()
    props = degraded["Properties"]
    assert props["AlarmName"] == f"taskrouter-{stage.config.name}-primary-degraded"
    rule = json.dumps(props["AlarmRule"])
    assert "ModelLatencyP90" in rule and "ModelErrors" in rule and "PrimaryFailureRate" in rule
    assert "FallbackRate" not in rule and "DecisionLatency" not in rule  # failover's consequences never feed it
    assert " OR " in rule and props["AlarmActions"] and props["OKActions"]
    # PrimaryFailure: the router's metric of the primary's own outcomes (never ops_mode / circuit_open)
    alarms = _resources(monitoring, "AWS::CloudWatch::Alarm").values()
    (failure,) = [a["Properties"] for a in alarms if "PrimaryFailureRate" in json.dumps(a["Properties"].get("AlarmName"))]
    assert failure["MetricName"] == "PrimaryFailure" and failure["Statistic"] == "Average" and failure["Period"] == 60
    assert failure["Threshold"] == 0.25 and failure["TreatMissingData"] == "notBreaching"


def test_the_alarm_handler_is_subscribed_scheduled_and_least_privileged(stage):
    monitoring = stage.templates["Monitoring"]
    functions = _resources(monitoring, "AWS::Lambda::Function")
    (logical, handler) = [(k, f) for k, f in functions.items() if f["Properties"]["Handler"] == "taskrouter.handlers.alarms.handler"][0]
    assert handler["Properties"]["ReservedConcurrentExecutions"] == 1  # notifications applied one at a time
    (subscription,) = [
        s for s in _resources(monitoring, "AWS::SNS::Subscription").values() if s["Properties"]["Protocol"] == "lambda"
    ]
    assert subscription["Properties"]["Endpoint"] == {"Fn::GetAtt": [logical, "Arn"]}
    (rule,) = _resources(monitoring, "AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    role = handler["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [
        s for p in _resources(monitoring, "AWS::IAM::Policy").values() if p["Properties"]["Roles"] == [{"Ref": role}]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    by_action = {a: s for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"ssm:GetParameter", "ssm:PutParameter", "sns:Publish", "sagemaker:InvokeEndpoint"} <= set(by_action)
    ssm_resources = json.dumps(by_action["ssm:PutParameter"]["Resource"])  # both named; the state created by its writers
    assert "ops-mode" in ssm_resources or "OpsMode" in ssm_resources
    assert "failover-state" in ssm_resources or "FailoverState" in ssm_resources
    assert len(by_action["ssm:PutParameter"]["Resource"]) == 2
    for action in ("ssm:PutParameter", "sns:Publish", "sagemaker:InvokeEndpoint", "kms:Decrypt"):
        assert by_action[action]["Resource"] != "*", action
    wildcard = {a for s in statements if s["Resource"] == "*" for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert wildcard == set()  # no wildcard resource: X-Ray off, DescribeAlarms on the composite's children
    children = json.dumps(by_action["cloudwatch:DescribeAlarms"]["Resource"])
    assert "ModelLatencyP90" in children and "PrimaryFailureRate" in children and "ModelErrors" in children
    assert handler["Properties"].get("TracingConfig", {}).get("Mode", "PassThrough") == "PassThrough"
    (subscription_props,) = [s["Properties"] for s in _resources(monitoring, "AWS::SNS::Subscription").values()
                             if s["Properties"]["Protocol"] == "lambda"]
    assert subscription_props["FilterPolicyScope"] == "MessageBody"
    assert subscription_props["FilterPolicy"] == {"AlarmName": [f"taskrouter-{stage.config.name}-primary-degraded"]}


def test_one_dashboard_per_stage_shows_routing_and_the_model(stage):
    (dashboard,) = _resources(stage.templates["Monitoring"], "AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == f"taskrouter-{stage.config.name}"
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for shown in ("Decision latency p90, zero_shot", "Fallback rate", "Primary failure rate", "Invalid output rate",
                  "Model latency p90 of", "Model errors of", "GPU memory of", "DecisionLatency", "GPUMemoryUtilizationNormalized"):
        assert shown in body, shown
