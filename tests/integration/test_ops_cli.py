"""`taskrouter ops mode show|set` against moto (CloudFormation outputs, SSM, SNS): an override is
kept with who and why, announced, and handed back with `set auto`."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from taskrouter.cli import main


@pytest.fixture
def deployed(monkeypatch, fake_aws_credentials):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        ssm, sns, sqs = boto3.client("ssm"), boto3.client("sns"), boto3.client("sqs")
        ssm.put_parameter(Name="/taskrouter/qa/ops-mode", Value="primary_first", Type="String")
        topic = sns.create_topic(Name="alarms")["TopicArn"]
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        cloudformation = boto3.client("cloudformation")
        for stack, outputs in (
            ("qa-Operations", {"OpsModeParameter": "/taskrouter/qa/ops-mode", "FailoverStateParameter": "/taskrouter/qa/failover-state"}),
            ("qa-Monitoring", {"AlarmTopicArn": topic}),
        ):
            template = {
                "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},  # a stack needs one resource
                "Outputs": {key: {"Value": value} for key, value in outputs.items()},
            }
            cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(template))

        def inbox() -> list[dict]:
            got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            return [json.loads(m["Body"]) for m in got]

        yield ssm, inbox


def test_show_set_and_hand_back(deployed, capsys):
    ssm, inbox = deployed
    assert main(["ops", "mode", "show", "--stage", "qa"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mode"] == "primary_first" and shown["set_by"] == "alarm handling" and shown["override"] is None

    assert main(["ops", "mode", "set", "openai_only", "--stage", "qa", "--reason", "model upgrade", "--by", "dana"]) == 0
    assert "primary_first -> openai_only" in capsys.readouterr().out
    assert ssm.get_parameter(Name="/taskrouter/qa/ops-mode")["Parameter"]["Value"] == "openai_only"
    (said,) = inbox()
    assert said["to"] == "openai_only" and "model upgrade" in said["why"] and said["source"] == "taskrouter-alarm-handling"
    assert main(["ops", "mode", "show", "--stage", "qa"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["set_by"] == "operator" and shown["override"]["by"] == "dana" and shown["override"]["reason"] == "model upgrade"

    assert main(["ops", "mode", "set", "auto", "--stage", "qa"]) == 0  # the alarm's last state: OK
    assert ssm.get_parameter(Name="/taskrouter/qa/ops-mode")["Parameter"]["Value"] == "primary_first"
    assert json.loads(ssm.get_parameter(Name="/taskrouter/qa/failover-state")["Parameter"]["Value"])["override"] is None


def test_an_override_needs_a_reason_and_an_undeployed_stage_says_so(deployed, capsys):
    assert main(["ops", "mode", "set", "openai_only", "--stage", "qa"]) == 2
    assert "--reason" in capsys.readouterr().err
    assert main(["ops", "mode", "show", "--stage", "nope"]) == 1
    err = capsys.readouterr().err
    assert "nope-Operations" in err and "is the stage deployed" in err
