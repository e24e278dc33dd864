"""Every AWS call of `taskrouter doctor` and `taskrouter ops unseen`, made with real boto3 clients to an
endpoint on loopback that answers, but not as AWS does (tests/integration/foreign_endpoint.py): a proxy's
HTML page, a gateway's text 500, an empty 200, the service's answer cut short, a redirect, a reset.
Each is told as what it is, naming the endpoint and where it came from; never a traceback, never an
answer taken for the service's. (The doctor's own lines, with these: tests/integration/test_doctor.py.)"""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

from taskrouter.doctor.aws import Aws, NotTheService, Unreachable

from .doctor_account import _MODELS, CALLS, Call
from .foreign_endpoint import HTML_200, KINDS, SIGN_IN, Answer, ForeignEndpoint, foreign, service_answer

REGION = "us-east-1"
# One attempt: a reset is retried by botocore's standard mode with backoff, seconds a call, which
# these tests need not wait for (the doctor's own retries: test_doctor.py).
ONE_ATTEMPT = Config(retries={"mode": "standard", "total_max_attempts": 1})
# What each says, after "ENDPOINT answered ": the protocol decides how a page or a cut answer reads.
SAID = {
    "html 200": ("HTTP 200 (text/html; charset=utf-8) with ", ("XML whose root is <html>", "a body that is not JSON")),
    "text 500": ("HTTP 500 (text/plain) with ", ("a body that is not XML", "a body that is not JSON")),
    "empty 200": ("HTTP 200 (no Content-Type) with ", ("an empty body",)),
    "redirect": ("HTTP 302 (text/html) with ", (f"a redirect to {SIGN_IN}",)),
    "cut short": ("HTTP 200 (", ("a body that is not XML (or XML cut short)", "a body that is not JSON")),
}


def _variable(service: str) -> str:
    """botocore's per-service endpoint variable: AWS_ENDPOINT_URL_SERVICE_QUOTAS, ..._SECRETS_MANAGER."""
    service_id = _MODELS.get_service_model(service).service_id
    return "AWS_ENDPOINT_URL_" + service_id.hyphenize().replace("-", "_").upper()


def _make(call: Call, aws: Aws):
    if call.paged:
        return list(aws.items(call.service, call.operation, call.paged, **call.params))
    return aws.call(call.service, call.operation, **call.params)


@pytest.mark.usefixtures("fake_aws_credentials")
@pytest.mark.parametrize("call", CALLS, ids=lambda call: call.operation)
def test_an_answer_not_the_services_names_the_endpoint_and_its_variable(monkeypatch, call):
    with ForeignEndpoint(HTML_200) as endpoint:
        monkeypatch.setenv(_variable(call.service), endpoint.url)
        aws = Aws(boto3.session.Session(region_name=REGION), ONE_ATTEMPT)
        for kind in KINDS:
            endpoint.answer, asked = foreign(kind, call.service, call.operation, call.result), endpoint.requests
            with pytest.raises(Unreachable if endpoint.answer.reset else NotTheService) as raised:
                _make(call, aws)
            failed = raised.value
            assert failed.action == call.action, kind
            assert endpoint.url in failed.message and "\n" not in str(failed), (kind, failed)
            assert failed.fix.startswith(f"{_variable(call.service)} sends "), (kind, failed.fix)
            assert endpoint.requests == asked + 1, kind  # not retried: it would come back the same
            if not endpoint.answer.reset:
                status, whys = SAID[kind]
                assert f"{endpoint.url} answered {status}" in failed.message, (kind, failed.message)
                assert any(why in failed.message for why in whys), (kind, failed.message)
        # The control: the same endpoint answering the whole answer, where it was cut above, is read.
        endpoint.answer = service_answer(call.service, call.operation, call.result)
        answer = _make(call, aws)
    if call.paged:
        assert answer == call.result[call.paged]
    else:
        assert {key: value for key, value in answer.items() if key != "ResponseMetadata"} == call.result


def _aws(monkeypatch, call: Call, endpoint: ForeignEndpoint) -> Aws:
    monkeypatch.setenv(_variable(call.service), endpoint.url)
    return Aws(boto3.session.Session(region_name=REGION), ONE_ATTEMPT)


@pytest.mark.usefixtures("fake_aws_credentials")
def test_json_of_another_api_is_not_the_services(monkeypatch):
    (call,) = [call for call in CALLS if call.operation == "GetAccountSettings"]
    other_api = Answer(200, {"Content-Type": "application/json"}, b'{"status": "ok", "version": "2.4.1"}')
    with ForeignEndpoint(other_api) as endpoint, pytest.raises(NotTheService) as raised:
        _make(call, _aws(monkeypatch, call, endpoint))
    assert "with JSON with none of the answer's fields" in raised.value.message


@pytest.mark.usefixtures("fake_aws_credentials")
def test_an_answer_without_what_the_service_always_sends_is_not_the_services(monkeypatch):
    """An empty JSON object is a valid answer on the wire (the protocols' answer with no member); a
    check reading a member the service always sends finds it missing: not a KeyError, the endpoint."""
    (call,) = [call for call in CALLS if call.operation == "GetAccountSettings"]
    with ForeignEndpoint(service_answer(call.service, call.operation, {})) as endpoint:
        answer = _make(call, _aws(monkeypatch, call, endpoint))
        with pytest.raises(NotTheService) as raised:
            answer["AccountLimit"]
    assert raised.value.message == f"{endpoint.url} answered with no AccountLimit, which Lambda always sends"
    assert answer.get("AccountUsage") is None  # what a check reads with .get may be left out


@pytest.mark.usefixtures("fake_aws_credentials")
def test_what_a_map_holds_is_data_not_the_endpoints(monkeypatch):
    """A registry item is a map of attributes: one the router cannot read (a name stored as a number)
    is skipped as the router skips it, not blamed on the endpoint; and a function's environment lacks
    what it lacks."""
    from taskrouter.adapters.dynamodb_registry import task_from_item

    (call,) = [call for call in CALLS if call.operation == "Query"]
    malformed = {"Items": [{"pk": {"S": "task"}, "sk": {"S": "follow_up_email"}, "name": {"N": "7"}}], "Count": 1,
                 "ScannedCount": 1}
    with ForeignEndpoint(service_answer(call.service, call.operation, malformed)) as endpoint:
        (item,) = _make(call, _aws(monkeypatch, call, endpoint))["Items"]
    assert task_from_item(item) is None
    with pytest.raises(KeyError):
        item["name"]["S"]
