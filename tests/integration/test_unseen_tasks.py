"""Live tasks the serving adapter never saw, read from a deployed stage (moto): the router function's
environment on its `live` alias and the registry table it names; `taskrouter ops unseen` and the
doctor's line; and `ops unseen` against an endpoint that is not AWS."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from taskrouter.operations.cli import main as ops_main
from taskrouter.operations.unseen import unseen_tasks

from .deployed_router import LIVE_TASKS as LIVE
from .deployed_router import deploy_router
from .doctor_account import CALLS
from .foreign_endpoint import HTML_200, KINDS, ForeignEndpoint, foreign

REGION = "us-east-1"
ONE_ATTEMPT = Config(retries={"mode": "standard", "total_max_attempts": 1})


def _deploy(adapter_env: dict[str, str]) -> str:
    """The deployed router, and the Api stack's output naming it."""
    function = deploy_router("qa", REGION, adapter_env)
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}, "Outputs": {"RouterFunctionName": {"Value": function}}}
    boto3.client("cloudformation", region_name=REGION).create_stack(StackName="qa-Api", TemplateBody=json.dumps(template))
    return function


def _call(service: str, operation: str, **params):
    from botocore import xform_name

    return getattr(boto3.client(service, region_name=REGION), xform_name(operation))(**params)


@pytest.mark.usefixtures("fake_aws_credentials")
@pytest.mark.parametrize(
    ("adapter_env", "unseen", "known", "said"),
    [
        ({"TASKROUTER_ADAPTER_NAME": "sales-router-v2", "TASKROUTER_ADAPTER_TASKS": "follow_up_email,prepare_meeting_minutes"},
         ("book_a_demo", "renewal_reminder"), True, "never saw 2 of the 4 live tasks: book_a_demo, renewal_reminder"),
        ({"TASKROUTER_ADAPTER_NAME": "base"}, (), True, "the base model serves"),
        ({"TASKROUTER_ADAPTER_NAME": "sales-router-v2"}, (), False, "lists no tasks"),
    ],
)
def test_unseen_tasks_come_from_the_deployed_router_and_registry(adapter_env, unseen, known, said):
    with mock_aws():
        found = unseen_tasks(_call, _deploy(adapter_env))
    assert (found.live, found.tasks, found.known) == (len(LIVE), unseen, known)  # the deleted task is no live one
    assert said in found.describe()


@pytest.mark.usefixtures("fake_aws_credentials")
def test_ops_unseen_prints_them(capsys):
    with mock_aws():
        _deploy({"TASKROUTER_ADAPTER_NAME": "sales-router-v2", "TASKROUTER_ADAPTER_TASKS": "follow_up_email"})
        code = ops_main(["unseen", "--stage", "qa", "--region", REGION])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    shown = json.loads(captured.out)
    assert shown == {"adapter": "sales-router-v2", "live_tasks": 4, "adapter_tasks_known": True,
                     "unseen": ["book_a_demo", "prepare_meeting_minutes", "renewal_reminder"]}
    assert captured.err.startswith("qa: adapter sales-router-v2 never saw 3 of the 4 live tasks")


@pytest.mark.usefixtures("fake_aws_credentials")
def test_ops_unseen_of_a_stage_not_deployed_is_one_line(capsys):
    with mock_aws():
        code = ops_main(["unseen", "--stage", "qa", "--region", REGION])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "is the stage deployed" in err


@pytest.mark.usefixtures("fake_aws_credentials")
def test_ops_unseen_says_in_one_line_when_an_endpoint_is_not_aws(monkeypatch, capsys):
    """An endpoint that answers, but not as AWS does (tests/integration/foreign_endpoint.py), is told as
    such (exit 2, as the doctor's "could not be checked"), never a traceback nor "deploy the stage
    first". Every kind through AWS_ENDPOINT_URL (the first call, DescribeStacks); a page at 200 and a
    text 500 through each later call's own variable. (Every call of the doctor's and of this command,
    with every kind: tests/integration/test_foreign_endpoints.py.)"""
    monkeypatch.setattr("taskrouter.doctor.aws.RETRIES", ONE_ATTEMPT)  # a reset, not retried here with backoff
    cases = [("AWS_ENDPOINT_URL", "DescribeStacks", kind) for kind in KINDS] + [
        (variable, operation, kind)
        for variable, operation in (("AWS_ENDPOINT_URL_LAMBDA", "GetFunctionConfiguration"), ("AWS_ENDPOINT_URL_DYNAMODB", "Query"))
        for kind in ("html 200", "text 500")]
    with mock_aws(), ForeignEndpoint(HTML_200) as endpoint:
        _deploy({"TASKROUTER_ADAPTER_NAME": "sales-router-v2", "TASKROUTER_ADAPTER_TASKS": "follow_up_email"})
        for variable, operation, kind in cases:
            (call,) = [call for call in CALLS if call.operation == operation]
            endpoint.answer = foreign(kind, call.service, call.operation, call.result)
            with monkeypatch.context() as scoped:
                scoped.setenv(variable, endpoint.url)
                code = ops_main(["unseen", "--stage", "qa", "--region", REGION])
            captured, case = capsys.readouterr(), (variable, kind)
            assert (code, captured.out) == (2, ""), (case, captured)
            assert captured.err.count("\n") == 1, (case, captured.err)
            assert captured.err.startswith(f"taskrouter ops unseen: could not be checked: {call.action}: "), (case, captured.err)
            assert endpoint.url in captured.err, (case, captured.err)
            assert f"Fix: {variable} sends " in captured.err and "deploy the stage" not in captured.err, (case, captured.err)
        code = ops_main(["unseen", "--stage", "qa", "--region", REGION])  # AWS's own endpoints again
    assert code == 0 and json.loads(capsys.readouterr().out)["unseen"] == ["book_a_demo", "prepare_meeting_minutes",
                                                                          "renewal_reminder"]


@pytest.mark.usefixtures("fake_aws_credentials")
@pytest.mark.parametrize(("router_env", "said"), [
    ({"TASKROUTER_TABLE_NAME": ""}, "has no TASKROUTER_TABLE_NAME in its environment"),
    ({"TASKROUTER_ADAPTER_TASKS": "Follow Up!"}, "TASKROUTER_ADAPTER_TASKS: 'Follow Up!' is no task name"),
])
def test_ops_unseen_of_a_function_that_is_no_router_is_one_line(capsys, router_env, said):
    with mock_aws():
        _deploy(router_env)
        code = ops_main(["unseen", "--stage", "qa", "--region", REGION])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("taskrouter ops unseen: function qa-live-router (live") and said in err
    assert err.endswith("deploy the stage again (`npx cdk deploy 'qa/*'`)\n")
