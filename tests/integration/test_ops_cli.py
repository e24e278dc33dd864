"""`taskrouter ops mode show|set` against moto (CloudFormation outputs, SSM, SNS): an override is
kept with who and why, announced, and handed back with `set auto`."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from taskrouter.cli import main
from tests.integration.ops_stage import create_stage_stacks

from .foreign_endpoint import HTML_200, KINDS, ForeignEndpoint, foreign


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
        create_stage_stacks("qa", "/taskrouter/qa/ops-mode", "/taskrouter/qa/failover-state", topic)

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


MODE, STATE = "/taskrouter/qa/ops-mode", "/taskrouter/qa/failover-state"
# What a hand edit or a broken writer can leave: a mode of the wrong case or no mode at all, a state
# that is no object, holds a time that is none, or lacks the fields an override lives in.
MALFORMED = [
    (MODE, "OpenAI_only"), (MODE, "[]"),
    (STATE, "[]"), (STATE, "{not json"),
    (STATE, json.dumps({"alarm_state": "OK", "alarm_changed_at": "yesterday", "mode": "primary_first",
                        "mode_set_at": None, "last_alarm_at": None, "override": None})),
    (STATE, json.dumps({"alarm_state": "ALARM", "mode": "openai_only"})),
]


def _param(ssm, name: str) -> str:
    return ssm.get_parameter(Name=name)["Parameter"]["Value"]


@pytest.mark.parametrize(("parameter", "value"), MALFORMED)
def test_show_says_a_parameter_is_malformed_and_set_overwrites_it(deployed, capsys, parameter, value):
    ssm, inbox = deployed
    ssm.put_parameter(Name=parameter, Value=value, Type="String", Overwrite=True)
    assert main(["ops", "mode", "show", "--stage", "qa"]) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert list(shown["malformed"]) == [parameter]
    if parameter == MODE:
        assert shown["mode"] is None and shown["set_by"] == "alarm handling"
    else:  # nothing read from it is shown as if it were true
        assert shown["mode"] == "primary_first" and shown["override"] is shown["alarm_state"] is shown["set_by"] is None
    (line,) = err.splitlines()  # one line: what is wrong, and the fix
    assert parameter in line and "taskrouter ops mode set" in line and "Traceback" not in err

    assert main(["ops", "mode", "set", "openai_only", "--stage", "qa", "--reason", "drill", "--by", "dana"]) == 0
    assert "malformed -> openai_only" in capsys.readouterr().out or parameter == STATE
    assert _param(ssm, MODE) == "openai_only"
    state = json.loads(_param(ssm, STATE))
    assert state["override"]["by"] == "dana" and state["override"]["mode"] == "openai_only"
    assert main(["ops", "mode", "show", "--stage", "qa"]) == 0
    assert "malformed" not in json.loads(capsys.readouterr().out)

    ssm.put_parameter(Name=parameter, Value=value, Type="String", Overwrite=True)
    capsys.readouterr()
    assert main(["ops", "mode", "set", "auto", "--stage", "qa"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert json.loads(_param(ssm, STATE))["override"] is None
    # the mode the alarm's recorded state calls for (OK); with no state to read, the router's mode is
    # kept: the alarm handling's next tick follows the alarm's actual state
    assert _param(ssm, MODE) == ("primary_first" if parameter == MODE else "openai_only")
    assert main(["ops", "mode", "show", "--stage", "qa"]) == 0
    assert "malformed" not in json.loads(capsys.readouterr().out)


ONE_ATTEMPT = Config(retries={"mode": "standard", "total_max_attempts": 1})
STACK = {"Stacks": [{"StackName": "qa-Operations", "CreationTime": "2026-12-01T00:00:00Z", "StackStatus": "CREATE_COMPLETE",
                     "Outputs": [{"OutputKey": "OpsModeParameter", "OutputValue": MODE}]}]}
PARAMETER = {"Parameter": {"Name": MODE, "Type": "String", "Value": "primary_first", "Version": 1}}


@pytest.mark.parametrize(("variable", "service", "operation", "result", "kinds"), [
    ("AWS_ENDPOINT_URL", "cloudformation", "DescribeStacks", STACK, KINDS),
    ("AWS_ENDPOINT_URL_SSM", "ssm", "GetParameter", PARAMETER, ("html 200", "text 500", "cut short")),
])
def test_an_endpoint_that_is_not_aws_is_told_in_one_line_never_as_an_undeployed_stage(
        deployed, monkeypatch, capsys, variable, service, operation, result, kinds):
    """`ops mode show|set` call through the doctor's one way to AWS: a proxy's page, a gateway's 500, an
    answer cut short (tests/integration/foreign_endpoint.py) are one line naming the call, the endpoint
    and the variable that sent it there, exit 2; never a traceback nor "deploy the stage first"."""
    monkeypatch.setattr("taskrouter.doctor.aws.RETRIES", ONE_ATTEMPT)  # a reset, not retried with backoff here
    with ForeignEndpoint(HTML_200) as endpoint:
        for kind in kinds:
            endpoint.answer = foreign(kind, service, operation, result)
            for command in (["show"], ["set", "openai_only", "--reason", "drill"]):
                with monkeypatch.context() as scoped:
                    scoped.setenv(variable, endpoint.url)
                    code = main(["ops", "mode", *command, "--stage", "qa"])
                captured, case = capsys.readouterr(), (kind, command[0])
                assert (code, captured.out) == (2, ""), (case, captured)
                assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, (case, captured.err)
                assert captured.err.startswith(f"taskrouter ops mode: could not be done: {service}:{operation}: "), (case, captured.err)
                assert endpoint.url in captured.err and f"Fix: {variable} sends " in captured.err, (case, captured.err)
                assert "deploy the stage" not in captured.err, (case, captured.err)
    assert main(["ops", "mode", "show", "--stage", "qa"]) == 0  # AWS's own endpoints (moto) again
