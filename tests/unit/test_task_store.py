"""The registry's writes against moto's DynamoDB (docs/api.md): identical writes change
nothing, versions are never reused, preconditions hold, and a writer that loses a race starts again.
The same rules run over HTTP against dynalite in tests/integration/test_registry_api.py."""

from __future__ import annotations

import boto3
import pytest

from taskrouter.adapters.dynamodb_registry import DynamoDBTaskSource
from taskrouter.adapters.dynamodb_task_store import MAX_WRITE_ROUNDS, DynamoDBTaskStore, WriteContention
from taskrouter.core.errors import NotFound, VersionConflict
from taskrouter.core.task_spec import TaskBody


class Ticks:
    """A clock whose every reading is a new timestamp, so an unchanged `updated_at` means no write."""

    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return f"2026-01-01T00:00:{self.n:02d}.000Z"


@pytest.fixture
def client(tasks_table):
    return tasks_table


@pytest.fixture
def store(client):
    return DynamoDBTaskStore(client, "tasks", clock=Ticks())


def body(description="Book a meeting", examples=()):
    return TaskBody(description=description, examples=list(examples))


def test_identical_put_changes_nothing(store):
    created, new = store.put("book_meeting", body(examples=["a call"]), if_match=None)
    again, new_again = store.put("book_meeting", body(examples=["a call"]), if_match=None)
    assert (new, new_again) == (True, False)
    assert (again.version, again.updated_at) == (created.version, created.updated_at) == (1, created.updated_at)
    assert store.put("book_meeting", body(examples=["another call"]), if_match=None)[0].version == 2


def test_identical_put_comes_before_the_preconditions(store):
    """A conditional write applied once and sent again (its answer lost) answers as applied."""
    store.put("book_meeting", body(), if_match=None)
    applied, _ = store.put("book_meeting", body("v2"), if_match=1)
    retried, created = store.put("book_meeting", body("v2"), if_match=1)
    assert (retried.version, retried.updated_at, created) == (2, applied.updated_at, False)
    assert store.put("book_meeting", body("v2"), if_match=None, if_none_match=True)[0].version == 2
    with pytest.raises(VersionConflict):
        store.put("book_meeting", body("v3"), if_match=1)


def test_if_none_match_creates_only(store):
    assert store.put("book_meeting", body(), if_match=None, if_none_match=True)[1] is True
    with pytest.raises(VersionConflict, match="exists"):
        store.put("book_meeting", body("someone else's"), if_match=None, if_none_match=True)
    assert store.get("book_meeting").description == "Book a meeting"


def test_a_version_is_never_reused_after_delete_and_recreate(store, client):
    store.put("book_meeting", body(), if_match=None)
    store.put("book_meeting", body("v2"), if_match=1)
    store.delete("book_meeting", if_match=2)
    assert store.get("book_meeting") is None and store.list() == []
    assert DynamoDBTaskSource(client, "tasks", ttl_s=0).tasks() == {}  # the router skips tombstones
    recreated, created = store.put("book_meeting", body("someone else's"), if_match=None, if_none_match=True)
    assert (created, recreated.version) == (True, 3)
    with pytest.raises(VersionConflict):  # an If-Match read before the delete never matches
        store.put("book_meeting", body("stale writer"), if_match=2)
    with pytest.raises(VersionConflict):
        store.delete("book_meeting", if_match=2)
    assert store.get("book_meeting").description == "someone else's"


def test_a_tombstone_keeps_no_text(store, client):
    store.put("book_meeting", body("private words", ["more private words"]), if_match=None)
    store.delete("book_meeting", if_match=None)
    item = client.get_item(TableName="tasks", Key={"pk": {"S": "TASK"}, "sk": {"S": "book_meeting"}})["Item"]
    assert "description" not in item and "examples" not in item and item["version"] == {"N": "1"}


def test_delete_of_an_absent_or_deleted_task_is_not_found(store):
    with pytest.raises(NotFound):
        store.delete("book_meeting", if_match=None)
    store.put("book_meeting", body(), if_match=None)
    store.delete("book_meeting", if_match=None)
    with pytest.raises(NotFound):
        store.delete("book_meeting", if_match=1)
    with pytest.raises(VersionConflict):  # a task that does not exist is at no version
        store.put("book_meeting", body(), if_match=1)


def _racing(client, rival_write, *, every=False):
    """Make the next UpdateItem of `client` (or, with `every`, each one) come after
    `rival_write(name)` by another writer; returns what undoes it."""
    original = client.update_item
    raced = []

    def update_after_a_rival(**kwargs):
        if every or not raced:
            raced.append(1)
            rival_write(kwargs["Key"]["sk"]["S"])
        return original(**kwargs)

    client.update_item = update_after_a_rival
    return lambda: setattr(client, "update_item", original)


def test_a_writer_that_loses_the_race_reads_again(store, client):
    """Another writer changes the task between this write's read and its conditional write."""
    rival = DynamoDBTaskStore(boto3.client("dynamodb", region_name="us-east-1"), "tasks")
    store.put("book_meeting", body(), if_match=None)
    restore = _racing(client, lambda name: rival.put(name, body("the rival's"), if_match=None))
    written, _ = store.put("book_meeting", body("mine"), if_match=None)
    restore()
    assert (written.version, written.description) == (3, "mine")  # above the rival's version 2

    store.put("contended", body(), if_match=None)
    restore = _racing(client, lambda name: rival.put(name, body("the rival's"), if_match=None))
    with pytest.raises(VersionConflict):  # with If-Match, the rival's write is a conflict
        store.put("contended", body("mine"), if_match=1)
    restore()


@pytest.mark.parametrize(("round_cost_s", "rounds_taken"), [(0.0, MAX_WRITE_ROUNDS), (3.0, 3)])
def test_a_writer_that_always_loses_gives_up(client, round_cost_s, rounds_taken):
    """Rivals win every round: the write gives up after MAX_WRITE_ROUNDS, or sooner when its rounds
    are slow (DynamoDB slow): no round starts past the 8 s budget (here at 0, 3 and 6 s; not 9 s)."""
    now = [0.0]
    store = DynamoDBTaskStore(client, "tasks", round_budget_s=8.0, timer=lambda: now[0])
    store.put("book_meeting", body(), if_match=None)
    rival = DynamoDBTaskStore(boto3.client("dynamodb", region_name="us-east-1"), "tasks")
    rounds = []

    def rival_wins(name):
        rounds.append(1)
        now[0] += round_cost_s
        rival.put(name, body(f"rival {len(rounds)}"), if_match=None)

    restore = _racing(client, rival_wins, every=True)
    with pytest.raises(WriteContention):
        store.put("book_meeting", body("mine"), if_match=None)
    restore()
    assert len(rounds) == rounds_taken


def test_a_write_read_before_a_delete_never_brings_the_task_back(store, client):
    """A reads the task at version 1; B deletes it (If-Match: 1); A's write at If-Match: 1 must not
    land on the tombstone, which keeps version 1."""
    rival = DynamoDBTaskStore(boto3.client("dynamodb", region_name="us-east-1"), "tasks")
    store.put("book_meeting", body(), if_match=None)
    restore = _racing(client, lambda name: rival.delete(name, if_match=1))
    with pytest.raises(VersionConflict):
        store.put("book_meeting", body("A's change"), if_match=1)
    restore()
    assert store.get("book_meeting") is None


def test_of_two_deletes_one_answers_not_found(store, client):
    rival = DynamoDBTaskStore(boto3.client("dynamodb", region_name="us-east-1"), "tasks")
    store.put("book_meeting", body(), if_match=None)
    restore = _racing(client, lambda name: rival.delete(name, if_match=None))
    with pytest.raises(NotFound):
        store.delete("book_meeting", if_match=None)
    restore()


def test_an_item_written_without_a_version_can_be_replaced(store, client):
    client.put_item(TableName="tasks", Item={
        "pk": {"S": "TASK"}, "sk": {"S": "hand_made"}, "name": {"S": "hand_made"}, "description": {"S": "by hand"},
    })
    assert store.get("hand_made").version == 1
    assert store.put("hand_made", body("by the API"), if_match=1)[0].version == 2
