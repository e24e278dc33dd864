"""The `taskrouter` command's help and errors (issue 12): each error is one line on stderr and a
non-zero exit, and says what to do: the flag to use, the variable to set, the file, line and column
to fix. HTTP cases run against `make local`; `--stage` cases against moto."""

from __future__ import annotations

import argparse
import io
import json
import socket

import boto3
import pytest
from moto import mock_aws

from taskrouter.cli import _parser, main, stage_region

from .test_local_server import serving

KEY = "errors-key-0123456789abcdef"  # API Gateway wants at least 20 characters
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_REGION", "AWS_DEFAULT_REGION",
)  # fmt: skip
ROUTE = ["route", "send Dana the follow-up"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("cli-errors"), "follow_up_email", TASKROUTER_API_KEY=KEY) as (local, _):
        yield local


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    """No TaskRouter or AWS settings from the machine running the tests: no credentials, no region."""
    for name in ("TASKROUTER_URL", "TASKROUTER_API_KEY", *CREDENTIAL_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def run(capsys, *args: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_of(capsys, *args: str, **kwargs) -> str:
    """The one line an error prints, after checking it is one line on stderr and a non-zero exit."""
    code, out, err = run(capsys, *args, **kwargs)
    assert code != 0 and out == "" and err.count("\n") == 1 and err.endswith("\n"), (code, out, err)
    return err.removesuffix("\n")


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again: nothing listens there


@pytest.fixture
def stage(server, environment):
    """A stage `qa` on moto: its stack's outputs point at the local server; its API key a wrong one."""
    environment.setenv("AWS_ACCESS_KEY_ID", "testing")
    environment.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        session = boto3.session.Session(region_name="us-east-1")

        def deploy(name: str, key_value: str) -> str:
            key = session.client("apigateway").create_api_key(name=f"taskrouter-{name}", value=key_value, enabled=True)
            template = {
                "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {"ApiUrl": {"Value": server.url + "/"}, "ApiKeyId": {"Value": key["id"]}},
            }
            session.client("cloudformation").create_stack(StackName=f"{name}-Api", TemplateBody=json.dumps(template))
            return key["id"]

        yield deploy


# -- help ------------------------------------------------------------------------------------------
def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_command_and_option_has_help_naming_the_environment(capsys):
    parsers = list(_parsers(_parser()))
    assert {path for path, _ in parsers} == {
        (), ("route",), ("tasks",), *[("tasks", action) for action in ("list", "get", "put", "delete", "import", "export")]
    }
    for path, parser in parsers:
        for action in parser._actions:  # every option, argument and command explained
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), path
            else:
                assert action.help, (path, action.dest)
        code, out, err = run(capsys, *path, "--help")
        assert code == 0 and err == ""
        for variable in ("TASKROUTER_URL", "TASKROUTER_API_KEY", "AWS_PROFILE"):
            assert variable in out, (path, variable)
    top = run(capsys, "--help")[1]
    for command in ("eval", "data generate", "review", "adapter train", "ops mode"):
        assert f"taskrouter {command}" in top
    assert "FILE|-" in run(capsys, "tasks", "import", "--help")[1]
    assert "(-: standard output)" in run(capsys, "tasks", "export", "--help")[1]


def test_a_usage_error_is_one_line_with_where_to_read_more(capsys):
    code, out, err = run(capsys, "tasks", "put", "some_task")
    assert (code, out) == (2, "")
    assert err == "taskrouter tasks put: the following arguments are required: --description (see `taskrouter tasks put --help`)\n"


# -- where the API is --------------------------------------------------------------------------------
def test_no_url_and_no_stage_names_the_flags(capsys):
    assert error_of(capsys, "tasks", "list") == (
        "taskrouter: no API to talk to: give --base-url URL or set TASKROUTER_URL (e.g. http://127.0.0.1:8080 for "
        "`make local`), or give --stage STAGE for a deployed stage"
    )


def test_stage_and_url_together_are_refused(capsys):
    assert error_of(capsys, "--stage", "dev", "--base-url", "http://127.0.0.1:8080", "tasks", "list") == (
        "taskrouter: give --stage (a deployed stage) or --base-url (a server's URL), not both"
    )


def test_a_url_without_scheme_says_to_add_it(capsys, environment):
    assert error_of(capsys, "--base-url", "127.0.0.1:8080", "tasks", "list") == (
        "taskrouter: --base-url '127.0.0.1:8080' has no http:// or https:// scheme: add it, e.g. "
        "--base-url http://127.0.0.1:8080"
    )
    environment.setenv("TASKROUTER_URL", "localhost:8080")
    assert error_of(capsys, "tasks", "list") == (
        "taskrouter: TASKROUTER_URL 'localhost:8080' has no http:// or https:// scheme: add it, e.g. "
        "TASKROUTER_URL=http://localhost:8080"
    )


def test_an_unreachable_server_is_named_with_what_to_check(capsys, environment):
    url = f"http://127.0.0.1:{unused_port()}"
    assert error_of(capsys, "--base-url", url, *ROUTE) == (
        f"taskrouter: the server at {url} could not be reached (Connection refused): is it running (`make local`)? "
        "Check the URL and port of --base-url"
    )
    environment.setenv("TASKROUTER_URL", url)
    assert error_of(capsys, "tasks", "list").endswith("Check the URL and port of TASKROUTER_URL")


def test_the_api_options_may_follow_the_command(server, capsys):
    code, out, _ = run(capsys, "tasks", "get", "follow_up_email", "--base-url", server.url, "--api-key", KEY)
    assert code == 0 and json.loads(out)["name"] == "follow_up_email"


# -- the API key ---------------------------------------------------------------------------------
def test_a_403_without_a_key_says_how_to_give_one(server, capsys):
    assert error_of(capsys, "--base-url", server.url, *ROUTE) == (
        "taskrouter: 403 http_error: Forbidden: the server wants an API key: give --api-key KEY or set "
        "TASKROUTER_API_KEY (`make local` checks the TASKROUTER_API_KEY it was started with)"
    )


def test_a_403_with_a_wrong_key_names_where_the_key_came_from(server, capsys, environment):
    assert error_of(capsys, "--base-url", server.url, "--api-key", "wrong-key-0123456789", *ROUTE) == (
        "taskrouter: 403 http_error: Forbidden: the API key given by --api-key was refused: give the right one "
        "with --api-key KEY or TASKROUTER_API_KEY"
    )
    environment.setenv("TASKROUTER_API_KEY", "wrong-key-0123456789")
    assert error_of(capsys, "--base-url", server.url, "tasks", "list") == (
        "taskrouter: 403 http_error: Forbidden: the API key in TASKROUTER_API_KEY was refused: give the right one "
        "with --api-key KEY or TASKROUTER_API_KEY"
    )
    environment.setenv("TASKROUTER_URL", server.url)  # and both from the environment, the key right
    environment.setenv("TASKROUTER_API_KEY", KEY)
    assert run(capsys, "tasks", "get", "follow_up_email")[0] == 0


def test_a_403_on_a_stage_names_the_key_and_the_stack_it_came_from(stage, capsys):
    key_id = stage("qa", "stale-key-0123456789abcdef")
    assert error_of(capsys, "--stage", "qa", "--region", "us-east-1", *ROUTE) == (
        f"taskrouter: 403 http_error: Forbidden: the API key of stage 'qa' (API Gateway key {key_id}, the output "
        "ApiKeyId of stack qa-Api) was refused: check that it is enabled and in the stage's usage plan, or give one "
        "with --api-key KEY or TASKROUTER_API_KEY"
    )
    # a write to a stage is authorized by IAM, not by the key (`make local` refuses it for the key here)
    assert error_of(capsys, "--stage", "qa", "--region", "us-east-1", "tasks", "delete", "follow_up_email") == (
        "taskrouter: 403 http_error: Forbidden: /tasks writes are signed with your AWS credentials (AWS_PROFILE): "
        "your identity needs execute-api:Invoke on the output TasksWriteArn of stack qa-Api"
    )
    code, out, _ = run(capsys, "--stage", "qa", "--region", "us-east-1", "--api-key", KEY, *ROUTE)
    assert code == 0 and json.loads(out)["task"] == "follow_up_email"


# -- a stage's AWS side --------------------------------------------------------------------------
def test_a_stage_without_credentials_says_how_to_set_them(capsys):
    assert error_of(capsys, "--stage", "dev", "tasks", "list") == (
        "taskrouter: no AWS credentials to find stage 'dev' with: set AWS_PROFILE (a profile of ~/.aws/config) "
        "or run `aws configure`"
    )


def test_an_unknown_profile_says_so(capsys, environment):
    environment.setenv("AWS_PROFILE", "no_such_profile")
    assert error_of(capsys, "--stage", "dev", "tasks", "list") == (
        "taskrouter: The config profile (no_such_profile) could not be found: set AWS_PROFILE to a profile of "
        "~/.aws/config, or run `aws configure --profile NAME`"
    )


def test_a_stage_region_comes_from_the_stage_config(stage, server, capsys):
    stage("dev", KEY)  # dev is in us-east-1 in infra/stages.toml; no region anywhere else
    code, out, err = run(capsys, "--stage", "dev", *ROUTE)
    assert (code, err) == (0, "") and json.loads(out)["task"] == "follow_up_email"


def test_a_stage_the_config_does_not_know_needs_region(stage, capsys):
    assert error_of(capsys, "--stage", "qa", "tasks", "list") == (
        "taskrouter: no AWS region for stage 'qa': give --region REGION; infra/stages.toml has no stage 'qa' "
        "(it has dev, prod)"
    )


def test_a_stage_not_deployed_says_where_it_was_looked_for(stage, capsys):
    assert stage_region("prod") == "eu-west-1"  # read from infra/stages.toml
    assert error_of(capsys, "--stage", "prod", "tasks", "list") == (
        "taskrouter: stack prod-Api was not found in eu-west-1, from infra/stages.toml: is stage 'prod' deployed "
        "(`npx cdk deploy 'prod/*'`)? Else give its region with --region"
    )


# -- files -----------------------------------------------------------------------------------------
BAD_JSON = """{
  "tasks": [
    {"name": "first_task", "description": "One"}
    {"name": "second_task", "description": "Two"}
  ]
}
"""  # the comma after the first task is missing: line 4, column 5


def test_a_task_file_with_bad_json_names_file_line_and_column(server, tmp_path, capsys, environment):
    file = tmp_path / "tasks.json"
    file.write_text(BAD_JSON)
    assert error_of(capsys, "--base-url", server.url, "--api-key", KEY, "tasks", "import", str(file)) == (
        f"taskrouter: {file}:4:5: malformed JSON: Expecting ',' delimiter"
    )
    assert error_of(capsys, "--base-url", server.url, "--api-key", KEY, "tasks", "import", "-",
                    stdin=BAD_JSON, monkeypatch=environment) == "taskrouter: <stdin>:4:5: malformed JSON: Expecting ',' delimiter"


def test_a_task_file_breaking_a_rule_names_the_field(server, tmp_path, capsys):
    file = tmp_path / "tasks.json"
    file.write_text(json.dumps({"tasks": [{"name": "fine_task", "description": "ok"}, {"name": "x", "description": 3}]}))
    assert error_of(capsys, "--base-url", server.url, "--api-key", KEY, "tasks", "import", str(file)) == (
        f"taskrouter: {file}: tasks[1].description: Input should be a valid string; "
        "tasks[1].name: must match ^[a-z][a-z0-9_]{2,63}$"
    )


def test_a_missing_file_is_named(server, tmp_path, capsys):
    missing = tmp_path / "absent.json"
    assert error_of(capsys, "--base-url", server.url, "tasks", "import", str(missing)) == (
        f"taskrouter: {missing}: cannot read it: No such file or directory"
    )


def test_export_dash_writes_standard_output_and_import_dash_reads_standard_input(server, tmp_path, capsys, environment):
    environment.chdir(tmp_path)
    code, out, err = run(capsys, "--base-url", server.url, "--api-key", KEY, "tasks", "export", "-")
    assert (code, err) == (0, "") and not (tmp_path / "-").exists()
    names = [task["name"] for task in json.loads(out)["tasks"]]  # the task file and nothing else
    assert "follow_up_email" in names
    code, out, _ = run(capsys, "--base-url", server.url, "--api-key", KEY, "tasks", "import", "-", "--dry-run",
                       stdin=json.dumps(json.loads(out)), monkeypatch=environment)
    assert (code, out) == (0, "nothing to change\n")


# -- route --conversation --------------------------------------------------------------------------
CONVERSATION = [
    {"role": "user", "content": "Send Dana a follow-up about pricing"},
    {"role": "assistant", "content": "Here is a draft of the follow-up email."},
    {"role": "user", "content": "Make it shorter"},
]


def test_route_takes_a_whole_conversation_from_a_file_or_standard_input(server, tmp_path, capsys, environment):
    messages = tmp_path / "conversation.json"
    messages.write_text(json.dumps(CONVERSATION))
    code, out, _ = run(capsys, "--base-url", server.url, "--api-key", KEY, "route", "--conversation", str(messages))
    assert code == 0 and (json.loads(out)["task"], json.loads(out)["event"]) == ("follow_up_email", "start")
    body = json.dumps({"conversation": CONVERSATION, "current_task": "follow_up_email", "tasks": ["follow_up_email"]})
    code, out, _ = run(capsys, "--base-url", server.url, "--api-key", KEY, "route", "--conversation", "-",
                       stdin=body, monkeypatch=environment)
    assert code == 0 and json.loads(out)["event"] == "continue"  # current_task from the body


def test_route_conversation_errors_name_the_file_and_the_fix(server, tmp_path, capsys):
    file = tmp_path / "conversation.json"
    file.write_text('[\n  {"role": "user", "content": "hi"},\n]\n')
    base = ["--base-url", server.url, "--api-key", KEY, "route"]
    assert error_of(capsys, *base, "--conversation", str(file)) == (
        f"taskrouter: {file}:3:1: malformed JSON: Expecting value"
    )
    file.write_text(json.dumps({"conversation": CONVERSATION, "mode": "fast"}))
    assert error_of(capsys, *base, "--conversation", str(file)) == (
        f"taskrouter: {file}: unknown field 'mode': a /route body holds conversation, current_task, tasks, strategy"
    )
    file.write_text('"just text"')
    assert error_of(capsys, *base, "--conversation", str(file)) == (
        f"taskrouter: {file}: expected a list of {{role, content}} messages or a /route body "
        "{conversation, current_task?, tasks?, strategy?}, not a JSON str"
    )
    assert error_of(capsys, *base, "hello", "--conversation", str(file)) == (
        "taskrouter: give the user's messages as text or --conversation FILE|-, not both (add the new message to "
        "the file's conversation)"
    )
    assert error_of(capsys, *base) == (
        "taskrouter: give the user's message (taskrouter route \"TEXT\"...) or --conversation FILE|-"
    )


# -- the Python client keeps its API ---------------------------------------------------------------
def test_the_client_library_raises_the_same_errors_with_clearer_messages(server):
    from taskrouter.client import TaskRouterClient, TaskRouterError

    url = f"http://127.0.0.1:{unused_port()}"
    with pytest.raises(TaskRouterError) as unreachable:
        TaskRouterClient(base_url=url).tasks.list()
    assert (unreachable.value.status, unreachable.value.code) == (0, "unreachable")
    assert unreachable.value.message == f"the server at {url} could not be reached (Connection refused)"
    with pytest.raises(TaskRouterError) as refused:
        TaskRouterClient(base_url=server.url).tasks.get("follow_up_email")
    assert (refused.value.status, refused.value.code, refused.value.message) == (403, "http_error", "Forbidden")
    assert (refused.value.method, refused.value.url) == ("GET", f"{server.url}/tasks/follow_up_email")
    with pytest.raises(ValueError, match=r"^base_url '127.0.0.1:8080' is not an http:// or https:// URL: add the "
                                         r"scheme, e.g. 'http://127.0.0.1:8080'$"):
        TaskRouterClient(base_url="127.0.0.1:8080")
