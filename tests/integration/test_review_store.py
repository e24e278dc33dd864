"""The reviewed copy never loses an edit, and never holds one it did not answer as saved: an edit that
cannot be written changes nothing, a copy changed on disk (a second review of it, an editor) is never
written over, a conversation added to the original since is shown, and the labels offered are the
task file's."""

from __future__ import annotations

import json

import pytest

from taskrouter.review.store import ChangedOnDisk, ReviewError, ReviewStore

from .reviewing import TASKS, example_copy, ids, refuse_writes, reviewed


def test_an_edit_that_cannot_be_written_changes_neither_memory_nor_file(tmp_path, monkeypatch):
    store = ReviewStore(example_copy(tmp_path), TASKS)
    store.set_flag("linkedin-start", True)
    on_disk, before = store.reviewed.read_bytes(), store.state()
    flags_on_disk = store.flags_file.read_bytes()

    refuse_writes(monkeypatch)
    with pytest.raises(OSError):
        store.remove("linkedin-start")
    with pytest.raises(OSError):
        store.set_label("minutes-start-terse", 0, "follow_up_email")
    with pytest.raises(OSError):
        store.set_flag("minutes-start-terse", True)
    assert store.state() == before
    assert store.reviewed.read_bytes() == on_disk and store.flags_file.read_bytes() == flags_on_disk

    monkeypatch.undo()  # the disk has room again: the next edit saves that edit alone
    store.set_flag("minutes-start-terse", True)
    assert "linkedin-start" in ids(reviewed(store))
    assert reviewed(store)[0]["messages"][0]["expect"]["task"] == "prepare_meeting_minutes"
    assert json.loads(store.flags_file.read_text()) == ["linkedin-start", "minutes-start-terse"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_second_review_of_the_same_copy_cannot_undo_the_first(tmp_path):
    source = example_copy(tmp_path)
    first, second = ReviewStore(source, TASKS), ReviewStore(source, TASKS)  # two servers on one file
    first.remove("linkedin-start")
    first.set_flag("minutes-start-terse", True)

    with pytest.raises(ChangedOnDisk, match="changed on disk"):
        second.set_label("minutes-start-terse", 0, "follow_up_email")  # would write linkedin-start back
    with pytest.raises(ChangedOnDisk):
        second.set_flag("minutes-typo-continue", True)  # would drop the first review's flag
    with pytest.raises(ChangedOnDisk):
        second.remove("minutes-typo-continue")
    assert "linkedin-start" not in ids(reviewed(first))
    assert "minutes-typo-continue" in ids(reviewed(first))
    assert reviewed(first)[0]["messages"][0]["expect"]["task"] == "prepare_meeting_minutes"
    assert json.loads(first.flags_file.read_text()) == ["minutes-start-terse"]

    state = second.state()  # what the page asks for next: the copy as it is now
    assert "linkedin-start" not in ids(state["conversations"]) and state["flagged"] == ["minutes-start-terse"]
    second.set_label("minutes-start-terse", 0, "follow_up_email")  # an edit on that view is saved
    assert "linkedin-start" not in ids(reviewed(first))
    assert reviewed(first)[0]["messages"][0]["expect"]["task"] == "follow_up_email"


def test_a_copy_changed_by_an_editor_is_never_written_over(tmp_path):
    store = ReviewStore(example_copy(tmp_path), TASKS)
    lines = store.reviewed.read_text().splitlines(keepends=True)
    edited = "".join(line.replace('"minutes from my acme call pls"', '"minutes from the acme call"') for line in lines)
    store.reviewed.write_text(edited)  # in place, as an editor saves: same file, same size or not

    with pytest.raises(ChangedOnDisk):
        store.remove("linkedin-start")
    assert store.reviewed.read_text() == edited
    assert store.state()["conversations"][0]["messages"][0]["content"] == "minutes from the acme call"

    store.reviewed.unlink()  # the copy deleted while the page is open: told, never made again silently
    with pytest.raises(ChangedOnDisk, match="gone"):
        store.state()
    with pytest.raises(ChangedOnDisk):
        store.set_flag("linkedin-start", True)
    assert not store.reviewed.exists()


def test_conversations_added_to_the_original_since_are_shown_and_removed_ones_stay_removed(tmp_path):
    source = example_copy(tmp_path)
    ReviewStore(source, TASKS).remove("linkedin-start")
    added = {
        "id": "added-later",
        "messages": [{"role": "user", "content": "pitch it in a minute", "expect": {"task": "create_one_minute_pitch", "event": "start"}}],
    }  # fmt: skip
    with source.open("a") as original:
        original.write(json.dumps(added) + "\n")

    again = ReviewStore(source, TASKS)
    state = again.state()
    assert ids(state["conversations"])[-1] == "added-later"
    assert "linkedin-start" not in ids(state["conversations"])  # removed in review: not brought back
    assert any("added-later" in notice and "added to" in notice for notice in state["notices"])
    assert ids(reviewed(again))[-1] == "added-later"
    assert ReviewStore(source, TASKS).state()["notices"] == []  # told once: it is in the copy now


def test_a_copy_made_before_removals_were_recorded_reports_what_it_lacks(tmp_path):
    source = example_copy(tmp_path)
    store = ReviewStore(source, TASKS)
    store.remove("linkedin-start")
    store.removed_file.unlink()  # as an older `taskrouter review` left it: removals not recorded

    state = ReviewStore(source, TASKS).state()
    assert "linkedin-start" not in ids(state["conversations"])  # not brought back: it may have been removed
    assert any("linkedin-start" in notice for notice in state["notices"])


def test_labels_not_in_the_task_file_are_flagged_and_never_offered(tmp_path):
    source = example_copy(tmp_path)
    lines = source.read_text().splitlines(keepends=True)
    source.write_text("".join(
        line.replace('"prepare_linkedin_post"', '"ghost_task"') if '"linkedin-start"' in line else line for line in lines
    ))  # fmt: skip
    store = ReviewStore(source, TASKS)
    state = store.state()
    assert state["tasks"] == TASKS  # the task file's, in its order; no task stands for itself
    assert state["unknown_tasks"] == ["ghost_task"]
    assert any("ghost_task" in notice for notice in state["notices"])
    with pytest.raises(ReviewError, match="not a task"):
        store.set_label("minutes-start-terse", 0, "ghost_task")
    store.set_label("linkedin-start", 0, "prepare_linkedin_post")  # relabelled: no longer unknown
    assert store.state()["unknown_tasks"] == []


def test_the_store_refuses_what_is_not_a_label(tmp_path):
    source = example_copy(tmp_path)
    store = ReviewStore(source, TASKS)
    with pytest.raises(ReviewError, match="not a task"):
        store.set_label("linkedin-start", 0, "hack")
    with pytest.raises(ReviewError, match="not a labelled user turn"):
        store.set_label("minutes-typo-continue", 1, None)  # an assistant message
    with pytest.raises(ReviewError, match="no conversation"):
        store.remove("absent")
    with pytest.raises(ReviewError, match="another file"):
        ReviewStore(source, TASKS, reviewed=source)
    store.remove("linkedin-start")
    assert "linkedin-start" not in ids(ReviewStore(source, TASKS).state()["conversations"])  # the copy, not the original


def test_a_single_turn_line_is_relabelled_from_its_running_task_and_marked_reviewed(tmp_path):
    """What `data harvest` writes: a top-level current_task, the last user turn labelled by a teacher."""
    source = tmp_path / "harvest.jsonl"
    line = {
        "id": "harvested-1",
        "current_task": "follow_up_email",
        "messages": [
            {"role": "user", "content": "draft the follow-up to Dana"},
            {"role": "assistant", "content": "Here is a draft."},
            {"role": "user", "content": "now the minutes", "expect": {"task": "follow_up_email", "event": "continue", "source": "teacher"}},
        ],
    }  # fmt: skip
    source.write_text(json.dumps(line) + "\n")
    store = ReviewStore(source, TASKS)
    store.set_label("harvested-1", 2, "prepare_meeting_minutes")
    (saved,) = reviewed(store)
    assert saved["current_task"] == "follow_up_email"
    assert saved["messages"][2]["expect"] == {"task": "prepare_meeting_minutes", "event": "switch", "source": "reviewed"}
    assert "expect" not in saved["messages"][0]


def test_a_label_outside_the_turn_s_allow_list_is_refused(tmp_path):
    source = tmp_path / "harvested.jsonl"
    source.write_text(json.dumps({"id": "allowed-one", "current_task": None, "messages": [
        {"role": "user", "content": "Can you write up the minutes?", "tasks": ["follow_up_email"],
         "expect": {"task": None, "event": "none", "source": "teacher"}},
    ]}) + "\n")  # fmt: skip
    store = ReviewStore(source, TASKS)
    with pytest.raises(ReviewError, match="'prepare_meeting_minutes' is not among the tasks this turn allowed: follow_up_email"):
        store.set_label("allowed-one", 0, "prepare_meeting_minutes")
    assert store.set_label("allowed-one", 0, "follow_up_email")["messages"][0]["tasks"] == ["follow_up_email"]
