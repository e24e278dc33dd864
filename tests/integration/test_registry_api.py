"""`/tasks` over real HTTP against `make local` (docs/api.md): every rule, versions and
If-Match, concurrent writers, and a change reaching `/route` within the cache's time-to-live."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from .test_local_server import serving

DESCRIPTION = {"description": "Book a meeting with a prospect", "examples": ["set up a call with Dana"]}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("registry"), "none", TASKROUTER_REGISTRY_TTL_S="1") as pair:
        yield pair


@pytest.fixture(scope="module")
def server(served):
    return served[0]


@pytest.fixture(scope="module")
def openai(served):
    return served[1]


def test_list_is_sorted_by_name_and_holds_the_defaults(server):
    status, body = server.request("GET", "/tasks")
    names = [task["name"] for task in body["tasks"]]
    assert status == 200 and names == sorted(names) and "follow_up_email" in names
    task = next(t for t in body["tasks"] if t["name"] == "follow_up_email")
    assert set(task) == {"name", "description", "examples", "version", "updated_at"}


def test_create_replace_get_delete(server):
    status, created = server.request("PUT", "/tasks/book_meeting", DESCRIPTION)
    assert status == 201 and created["version"] == 1 and created["updated_at"].endswith("Z")
    assert created["examples"] == ["set up a call with Dana"]
    status, replaced = server.request("PUT", "/tasks/book_meeting", {"description": "Book a meeting"})
    assert status == 200 and replaced["version"] == 2 and replaced["examples"] == []
    assert server.request("GET", "/tasks/book_meeting") == (200, replaced)
    assert server.request("DELETE", "/tasks/book_meeting") == (204, None)
    status, body = server.request("GET", "/tasks/book_meeting")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert server.request("DELETE", "/tasks/book_meeting")[0] == 404


def test_if_match_guards_replace_and_delete(server):
    server.request("PUT", "/tasks/guarded_task", DESCRIPTION)
    changed = {"description": "Book a meeting, changed"}
    status, body = server.request("PUT", "/tasks/guarded_task", changed, {"If-Match": "7"})
    assert status == 409 and body == {"error": {"code": "version_conflict", "message": body["error"]["message"]}}
    assert server.request("PUT", "/tasks/guarded_task", changed, {"If-Match": "1"})[1]["version"] == 2
    assert server.request("DELETE", "/tasks/guarded_task", headers={"If-Match": "1"})[0] == 409
    assert server.request("DELETE", "/tasks/guarded_task", headers={"If-Match": '"2"'}) == (204, None)
    assert server.request("PUT", "/tasks/absent_task", DESCRIPTION, {"If-Match": "1"})[0] == 409


def test_an_identical_put_changes_nothing(server):
    created = server.request("PUT", "/tasks/steady_task", DESCRIPTION)[1]
    time.sleep(0.01)  # a write now would carry a later updated_at
    assert server.request("PUT", "/tasks/steady_task", DESCRIPTION) == (200, created)
    assert server.request("GET", "/tasks/steady_task") == (200, created)


def test_a_conditional_put_applied_then_sent_again_answers_200(server):
    """The retry of a write whose answer was lost (a 503, a timeout) converges to that one write."""
    server.request("PUT", "/tasks/retried_task", DESCRIPTION)
    changed = {"description": "Book a meeting, changed once"}
    first = server.request("PUT", "/tasks/retried_task", changed, {"If-Match": "1"})
    assert first[0] == 200 and first[1]["version"] == 2
    assert server.request("PUT", "/tasks/retried_task", changed, {"If-Match": "1"}) == first
    created = server.request("PUT", "/tasks/retried_create", DESCRIPTION, {"If-None-Match": "*"})
    assert created[0] == 201
    assert server.request("PUT", "/tasks/retried_create", DESCRIPTION, {"If-None-Match": "*"}) == (200, created[1])


def test_a_stale_if_match_after_delete_and_recreate_is_a_conflict(server):
    server.request("PUT", "/tasks/reborn_task", DESCRIPTION)
    stale = server.request("GET", "/tasks/reborn_task")[1]["version"]
    assert server.request("DELETE", "/tasks/reborn_task") == (204, None)
    status, reborn = server.request("PUT", "/tasks/reborn_task", {"description": "Someone else's new task"})
    assert status == 201 and reborn["version"] > stale  # a version is never reused
    status, body = server.request("PUT", "/tasks/reborn_task", {"description": "stale"}, {"If-Match": str(stale)})
    assert (status, body["error"]["code"]) == (409, "version_conflict")
    assert server.request("DELETE", "/tasks/reborn_task", headers={"If-Match": str(stale)})[0] == 409
    assert server.request("GET", "/tasks/reborn_task") == (200, reborn)


def test_if_none_match_creates_only_and_one_of_concurrent_creators_wins(server):
    for round_ in range(5):
        name = f"/tasks/created_once_{round_}"
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(
                lambda writer: server.request(
                    "PUT", name, {"description": f"creator {writer}"}, {"If-None-Match": "*"}
                ),
                range(4),
            ))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [201, 409, 409, 409], f"round {round_}: {statuses}"
        (winner,) = [body for status, body in answers if status == 201]
        assert server.request("GET", name) == (200, winner)


def test_if_none_match_takes_only_a_star(server):
    status, body = server.request("PUT", "/tasks/good_name", DESCRIPTION, {"If-None-Match": '"3"'})
    assert status == 400 and body["error"]["message"].startswith("If-None-Match")


@pytest.mark.parametrize(
    ("path", "body", "headers", "field"),
    [
        ("/tasks/Bad-Name", DESCRIPTION, {}, "name"),
        ("/tasks/ab", DESCRIPTION, {}, "name"),
        ("/tasks/" + "a" * 65, DESCRIPTION, {}, "name"),
        ("/tasks/abc%0A", DESCRIPTION, {}, "name"),  # a trailing newline, decoded as API Gateway does
        ("/tasks/none", DESCRIPTION, {}, "name"),
        ("/tasks/good_name", {}, {}, "description"),
        ("/tasks/good_name", {"description": ""}, {}, "description"),
        ("/tasks/good_name", {"description": "x" * 501}, {}, "description"),
        ("/tasks/good_name", {"description": "d", "examples": ["e"] * 11}, {}, "examples"),
        ("/tasks/good_name", {"description": "d", "examples": ["e" * 301]}, {}, "examples[0]"),
        ("/tasks/good_name", {"description": "d", "examples": [""]}, {}, "examples[0]"),
        ("/tasks/good_name", {"description": "d", "version": 9}, {}, "body: unknown field"),
        ("/tasks/good_name", {"description": 5}, {}, "description"),
        ("/tasks/good_name", DESCRIPTION, {"If-Match": "latest"}, "If-Match"),
    ],
)
def test_each_validation_rule_is_a_400_naming_its_field(server, path, body, headers, field):
    status, answer = server.request("PUT", path, body, headers)
    assert status == 400 and answer["error"]["code"] == "invalid_request"
    assert answer["error"]["message"].startswith(field)
    assert server.request("GET", "/tasks/good_name")[0] in (400, 404)


def test_two_writers_with_the_same_version_never_both_win(server):
    server.request("PUT", "/tasks/contended_task", DESCRIPTION)
    for round_ in range(5):
        version = server.request("GET", "/tasks/contended_task")[1]["version"]
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            answers = list(pool.map(
                lambda writer: server.request(
                    "PUT", "/tasks/contended_task", {"description": f"round {round_}, writer {writer}"},
                    {"If-Match": str(version)},
                )[0],
                range(2),
            ))
        assert sorted(answers) == [200, 409], f"round {round_}: {answers}"


def test_a_new_task_reaches_route_within_the_cache_lifetime(server, openai):
    server.request("PUT", "/tasks/fresh_task", {"description": "A task added at run time"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        server.request("POST", "/route", {"conversation": [{"role": "user", "content": "hi"}], "current_task": None})
        enum = openai.requests[-1].json()["response_format"]["json_schema"]["schema"]["properties"]["task"]["enum"]
        if "fresh_task" in enum:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the new task never reached /route")


def test_deleting_the_running_task_never_breaks_route(server, openai):
    server.request("PUT", "/tasks/doomed_task", DESCRIPTION)
    time.sleep(1.1)  # the router's copy (time-to-live 1 s here) now holds it
    server.request("DELETE", "/tasks/doomed_task")
    time.sleep(1.1)
    openai.always(openai.answer("follow_up_email"))
    try:
        body = {"conversation": [{"role": "user", "content": "now the follow-up"}], "current_task": "doomed_task"}
        status, answer = server.request("POST", "/route", body)
    finally:
        openai.always(openai.answer("none"))
    # the contract: a running task the registry no longer holds is treated as null
    assert status == 200 and (answer["task"], answer["event"]) == ("follow_up_email", "start")


def test_conditional_writes_hold_under_truly_parallel_writers(server):
    """The same race straight against the registry's DynamoDB server, many writers at once."""
    import boto3

    from taskrouter.adapters.dynamodb_task_store import DynamoDBTaskStore
    from taskrouter.core.errors import VersionConflict
    from taskrouter.core.task_spec import TaskBody

    client = boto3.client(
        "dynamodb", endpoint_url=server.dynamodb_endpoint, region_name="us-east-1",
        aws_access_key_id="local", aws_secret_access_key="local",
    )
    store = DynamoDBTaskStore(client, "taskrouter-local-tasks")
    store.put("raced_task", TaskBody(description="v1"), if_match=None)

    def write(version: int, writer: int) -> bool:
        try:
            store.put("raced_task", TaskBody(description=f"version {version}, writer {writer}"), if_match=version)
            return True
        except VersionConflict:
            return False

    for _ in range(10):
        version = store.get("raced_task").version
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            wins = list(pool.map(write, [version] * 8, range(8)))
        assert wins.count(True) == 1
        assert store.get("raced_task").version == version + 1
