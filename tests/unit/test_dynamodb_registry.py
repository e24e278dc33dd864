"""The registry reader against moto's DynamoDB, with a controllable clock."""

from __future__ import annotations

import pytest

from taskrouter.adapters.dynamodb_registry import DynamoDBTaskSource
from taskrouter.core.tasks import RegistryUnavailable
from tests.unit.fakes import Clock


@pytest.fixture
def client(tasks_table):
    return tasks_table


def put(client, name, description="d", **extra):
    item = {"pk": {"S": "TASK"}, "sk": {"S": name}, "name": {"S": name}, "description": {"S": description}, **extra}
    client.put_item(TableName="tasks", Item=item)


def test_reads_all_tasks_through_pages(client):
    for i in range(30):
        put(client, f"task_{i:02d}", examples={"L": [{"S": "say this"}]}, version={"N": "3"})
    original_query = client.query
    pages = []

    def small_pages(**kwargs):
        pages.append(1)
        return original_query(Limit=7, **kwargs)

    client.query = small_pages
    tasks = DynamoDBTaskSource(client, "tasks", ttl_s=10).tasks()
    assert len(tasks) == 30 and len(pages) >= 5
    assert tasks["task_07"].examples == ("say this",) and tasks["task_07"].version == 3


def test_skips_malformed_items(client):
    put(client, "good_task")
    put(client, "none")  # the reserved "no task" answer can never be a task
    client.put_item(TableName="tasks", Item={"pk": {"S": "TASK"}, "sk": {"S": "Bad Name"}, "name": {"S": "Bad Name"}, "description": {"S": "x"}})
    client.put_item(TableName="tasks", Item={"pk": {"S": "TASK"}, "sk": {"S": "no_description"}, "name": {"S": "no_description"}})
    assert list(DynamoDBTaskSource(client, "tasks", ttl_s=10).tasks()) == ["good_task"]


def test_cache_lives_ttl_then_refreshes(client):
    clock = Clock()
    source = DynamoDBTaskSource(client, "tasks", ttl_s=15, clock=clock)
    put(client, "first_task")
    assert list(source.tasks()) == ["first_task"]
    put(client, "second_task")
    clock.now = 14.9
    assert list(source.tasks()) == ["first_task"]
    clock.now = 15.0
    assert sorted(source.tasks()) == ["first_task", "second_task"]


def test_serves_the_last_good_copy_when_dynamodb_fails_and_backs_off(client):
    clock = Clock()
    source = DynamoDBTaskSource(client, "tasks", ttl_s=15, clock=clock, retry_after_failure_s=5)
    put(client, "first_task")
    source.tasks()
    client.delete_table(TableName="tasks")
    calls = []
    original_query = client.query
    client.query = lambda **kwargs: calls.append(1) or original_query(**kwargs)
    clock.now = 100
    assert list(source.tasks()) == ["first_task"]
    clock.now = 104.9
    assert list(source.tasks()) == ["first_task"] and len(calls) == 1  # no retry inside the back-off
    clock.now = 105
    source.tasks()
    assert len(calls) == 2


def test_no_copy_and_no_dynamodb_is_unavailable(client):
    with pytest.raises(RegistryUnavailable):
        DynamoDBTaskSource(client, "missing", ttl_s=15).tasks()
