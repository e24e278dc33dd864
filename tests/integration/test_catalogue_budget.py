"""The catalogue budget over real HTTP against `make local`: a write past it is refused with the
numbers and writes nothing, `tasks import` checks a whole file first, and a registry over it (written
behind the API's back) still routes, logged."""

from __future__ import annotations

import json
import re

import boto3
import pytest

from taskrouter.cli import main
from taskrouter.core.catalogue import byte_budget
from taskrouter.core.task_spec import MAX_DESCRIPTION_CHARS, MAX_EXAMPLE_CHARS
from taskrouter.registry_schema import PARTITION_KEY, SORT_KEY, TASK_PARTITION
from taskrouter.repository import serving_max_tokens

from .test_local_server import ROUTE_BODY, serving

BUDGET = byte_budget(serving_max_tokens()).limit
REFUSAL = re.compile(r"catalogue (\d+) bytes of (\d+), (\d+) left")


def large(index: int) -> dict:
    """A task at the field limits (~1,450 bytes as rendered)."""
    return {"description": f"Large task {index} " + "d" * (MAX_DESCRIPTION_CHARS - 20), "examples": ["e" * MAX_EXAMPLE_CHARS] * 3}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("budget"), "none", TASKROUTER_REGISTRY_TTL_S="0") as pair:
        yield pair


@pytest.fixture(scope="module")
def server(served):
    return served[0]


def names(server) -> list[str]:
    return [task["name"] for task in server.request("GET", "/tasks")[1]["tasks"]]


def test_a_write_past_the_budget_is_refused_with_the_numbers_and_writes_nothing(server):
    written = []
    for index in range(40):  # far more than fit
        status, body = server.request("PUT", f"/tasks/large_task_{index:02d}", large(index))
        if status != 201:
            break
        written.append(index)
    assert status == 422 and body["error"]["code"] == "catalogue_too_large", body
    size, budget, left = map(int, REFUSAL.fullmatch(body["error"]["message"]).groups())
    assert budget == BUDGET and size > budget and 0 <= left < size - (budget - left)
    assert 5 < len(written) < 20  # the budget admits about 13 tasks at the field limits
    assert f"large_task_{index:02d}" not in names(server)
    assert server.request("GET", f"/tasks/large_task_{index:02d}")[0] == 404

    # a retried write already applied, a write that shrinks, and a delete are always let through
    assert server.request("PUT", "/tasks/large_task_00", large(0))[0] == 200
    assert server.request("PUT", "/tasks/large_task_00", {"description": "Now short"})[0] == 200
    assert server.request("DELETE", "/tasks/large_task_01")[0] == 204
    # ... and the room they made is usable again
    assert server.request("PUT", f"/tasks/large_task_{index:02d}", large(index))[0] == 201


def test_import_checks_the_whole_file_before_its_first_write(server, tmp_path, capsys):
    before = names(server)
    file = tmp_path / "tasks.json"
    file.write_text(json.dumps({"tasks": [{"name": f"imported_{index:02d}", **large(index)} for index in range(30)]}))
    code = main(["--base-url", server.url, "tasks", "import", str(file)])
    err = capsys.readouterr().err
    assert code == 1 and REFUSAL.search(err) and "nothing imported" in err and err.count("\n") == 1
    assert names(server) == before


def test_import_with_prune_deletes_first_so_a_file_that_fits_goes_in(server, tmp_path, capsys):
    wanted = [{"name": f"replacement_{index:02d}", **large(100 + index)} for index in range(8)]
    file = tmp_path / "tasks.json"
    file.write_text(json.dumps({"tasks": wanted}))
    code = main(["--base-url", server.url, "tasks", "import", str(file), "--prune"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    first_create = next(i for i, line in enumerate(out) if line.startswith("create "))
    assert all(line.startswith("delete ") for line in out[:first_create])
    assert names(server) == sorted(task["name"] for task in wanted)


def test_a_registry_over_the_budget_still_routes_and_logs_the_cut(server):
    table = boto3.client("dynamodb", endpoint_url=server.dynamodb_endpoint, region_name="us-east-1",
                         aws_access_key_id="local", aws_secret_access_key="local")
    [name] = table.list_tables()["TableNames"]
    for index in range(30):  # past the budget, behind the API's back (as two concurrent writers could)
        task = large(200 + index)
        table.put_item(TableName=name, Item={
            PARTITION_KEY: {"S": TASK_PARTITION}, SORT_KEY: {"S": f"direct_{index:02d}"}, "name": {"S": f"direct_{index:02d}"},
            "description": {"S": task["description"]}, "examples": {"L": [{"S": e} for e in task["examples"]]},
            "version": {"N": "1"}, "updated_at": {"S": "2026-12-02T00:00:00.000Z"},
        })
    status, body = server.request("POST", "/route", ROUTE_BODY)
    assert status == 200 and body["backend"] == "openai", body
    # this route's cut (an earlier route of the module may have logged a milder one)
    assert 'catalogue_cut="examples dropped, descriptions cut to' in server.log_line("examples dropped", timeout_s=20)
