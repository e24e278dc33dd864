"""The Python client and the `taskrouter` command against `make local` over real HTTP."""

from __future__ import annotations

import json

import pytest

from taskrouter.cli import main
from taskrouter.client import TaskRouterClient, TaskRouterError

from .test_local_server import serving

CLIENT_KEY = "client-key-0123456789abcdef"  # API Gateway wants at least 20 characters


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("client"), "follow_up_email", TASKROUTER_API_KEY=CLIENT_KEY) as (local, _):
        yield local


@pytest.fixture
def client(server):
    return TaskRouterClient(base_url=server.url, api_key=CLIENT_KEY)


def cli(server, *args, capsys):
    code = main(["--base-url", server.url, "--api-key", CLIENT_KEY, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_client_routes_and_manages_tasks(client):
    decision = client.route([{"role": "user", "content": "send the follow-up"}])
    assert (decision["task"], decision["event"], decision["backend"]) == ("follow_up_email", "start", "openai")
    created = client.tasks.put("client_task", "Made by the client", ["an example"])
    assert created["version"] == 1 and client.tasks.get("client_task") == created
    assert client.tasks.put("client_task", "Changed", if_match=1)["version"] == 2
    with pytest.raises(TaskRouterError) as conflict:
        client.tasks.put("client_task", "Again", if_match=1)
    assert (conflict.value.status, conflict.value.code) == (409, "version_conflict")
    client.tasks.delete("client_task", if_match=2)
    with pytest.raises(TaskRouterError) as missing:
        client.tasks.get("client_task")
    assert missing.value.status == 404
    assert "follow_up_email" in [task["name"] for task in client.tasks.list()]


def test_current_task_may_be_omitted_by_the_client_and_the_cli(client, server, capsys, monkeypatch):
    sent = []
    original = client.request
    monkeypatch.setattr(client, "request", lambda method, path, body=None, **kw: sent.append(body) or original(method, path, body, **kw))
    started = client.route([{"role": "user", "content": "send the follow-up"}])
    running = client.route([{"role": "user", "content": "send the follow-up"}], "follow_up_email")
    assert "current_task" not in sent[0] and sent[1]["current_task"] == "follow_up_email"
    assert (started["event"], running["event"]) == ("start", "continue")
    code, out, _ = cli(server, "route", "send Dana the follow-up", capsys=capsys)
    assert code == 0 and json.loads(out)["event"] == "start"
    code, out, _ = cli(server, "route", "send Dana the follow-up", "--current-task", "follow_up_email", capsys=capsys)
    assert code == 0 and json.loads(out)["event"] == "continue"


def test_create_only_writes_once(client, server, capsys):
    created = client.tasks.put("created_once", "First", create_only=True)
    assert client.tasks.put("created_once", "First", create_only=True) == created  # a retry: already there
    with pytest.raises(TaskRouterError) as taken:
        client.tasks.put("created_once", "Someone else's", create_only=True)
    assert (taken.value.status, taken.value.code) == (409, "version_conflict")
    code, _, err = cli(server, "tasks", "put", "created_once", "--description", "Mine", "--create-only", capsys=capsys)
    assert code == 1 and "409 version_conflict" in err


def test_client_without_the_api_key_is_refused(server):
    with pytest.raises(TaskRouterError) as refused:
        TaskRouterClient(base_url=server.url).tasks.list()
    assert refused.value.status == 403


def test_client_needs_a_stage_or_a_url():
    with pytest.raises(ValueError, match="stage"):
        TaskRouterClient()


def test_cli_route_and_tasks(server, capsys):
    code, out, _ = cli(server, "route", "send Dana the follow-up", capsys=capsys)
    assert code == 0 and json.loads(out)["task"] == "follow_up_email"
    code, out, _ = cli(server, "tasks", "put", "cli_task", "--description", "From the CLI", "--example", "e1", capsys=capsys)
    assert code == 0 and json.loads(out)["examples"] == ["e1"]
    code, out, _ = cli(server, "tasks", "get", "cli_task", capsys=capsys)
    assert json.loads(out)["description"] == "From the CLI"
    assert cli(server, "tasks", "delete", "cli_task", capsys=capsys)[0] == 0


def test_cli_errors_are_one_line_and_a_non_zero_exit(server, capsys):
    code, out, err = cli(server, "tasks", "get", "absent_task", capsys=capsys)
    assert code == 1 and out == "" and err.count("\n") == 1 and "404 not_found" in err
    code, _, err = cli(server, "tasks", "put", "Bad-Name", "--description", "x", capsys=capsys)
    assert code == 1 and "400 invalid_request: name:" in err


def test_import_is_idempotent_dry_runs_and_prunes_only_when_asked(server, tmp_path, capsys):
    file = tmp_path / "tasks.json"
    file.write_text(json.dumps({"tasks": [
        {"name": "follow_up_email", "description": "Changed by the import", "examples": []},
        {"name": "imported_task", "description": "New from the file"},
    ]}))
    code, out, _ = cli(server, "tasks", "import", str(file), "--dry-run", capsys=capsys)
    assert code == 0 and out.splitlines() == ["would update follow_up_email", "would create imported_task"]
    assert cli(server, "tasks", "get", "imported_task", capsys=capsys)[0] == 1  # nothing written
    code, out, _ = cli(server, "tasks", "import", str(file), capsys=capsys)
    assert out.splitlines() == ["update follow_up_email", "create imported_task"]
    assert cli(server, "tasks", "import", str(file), capsys=capsys)[1] == "nothing to change\n"
    remaining = len(TaskRouterClient(base_url=server.url, api_key=CLIENT_KEY).tasks.list())
    assert remaining > 2  # without --prune, nothing else was deleted
    code, out, _ = cli(server, "tasks", "import", str(file), "--prune", "--dry-run", capsys=capsys)
    assert all(line.startswith("would delete ") for line in out.splitlines()) and len(out.splitlines()) == remaining - 2


def test_export_then_import_round_trips(server, tmp_path, capsys):
    exported = tmp_path / "export.json"
    assert cli(server, "tasks", "export", str(exported), capsys=capsys)[0] == 0
    assert len(json.loads(exported.read_text())["tasks"]) >= 2
    assert cli(server, "tasks", "import", str(exported), capsys=capsys)[1] == "nothing to change\n"


def test_a_bad_task_file_is_one_clear_line(server, tmp_path, capsys):
    file = tmp_path / "bad.json"
    file.write_text(json.dumps({"tasks": [{"name": "none", "description": "reserved"}]}))
    code, _, err = cli(server, "tasks", "import", str(file), capsys=capsys)
    assert code == 1 and "reserved" in err and err.count("\n") == 1


def test_a_stage_is_found_from_its_stack_outputs_and_its_key_from_api_gateway(server, monkeypatch):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        session = boto3.session.Session(region_name="us-east-1")
        key = session.client("apigateway").create_api_key(name="taskrouter-qa", value=CLIENT_KEY, enabled=True)
        template = {
            "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {"ApiUrl": {"Value": server.url + "/"}, "ApiKeyId": {"Value": key["id"]}},
        }
        session.client("cloudformation").create_stack(StackName="qa-Api", TemplateBody=json.dumps(template))
        client = TaskRouterClient(stage="qa", region="us-east-1", session=session)
        assert client.base_url == server.url
        assert "follow_up_email" in [task["name"] for task in client.tasks.list()]
        # writes are signed with the caller's credentials (local mode ignores the signature)
        assert client.tasks.put("signed_task", "Written with SigV4")["version"] == 1
        client.tasks.delete("signed_task")
