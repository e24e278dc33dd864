"""Loading labelled conversations: every rule named with its line and field, turns expanded as the
contract says."""

import json

import pytest

from taskrouter.evaluation.dataset import DatasetError, as_json, load_dataset, parse_dataset, turns_of


def write(tmp_path, *conversations):
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in conversations) + "\n")
    return path


def user(content, task, event):
    return {"role": "user", "content": content, "expect": {"task": task, "event": event}}


def test_turns_carry_the_history_and_the_running_task_of_the_labels_before(tmp_path):
    conversation = {"id": "c1", "messages": [
        user("minutes please", "prepare_meeting_minutes", "start"),
        {"role": "assistant", "content": "here"},
        user("now the email", "follow_up_email", "switch"),
        {"role": "assistant", "content": "done"},
        user("thanks", None, "end"),
    ]}
    turns = turns_of(load_dataset(write(tmp_path, conversation)))
    assert [(t.index, t.current_task, t.expected.task) for t in turns] == [
        (0, None, "prepare_meeting_minutes"), (2, "prepare_meeting_minutes", "follow_up_email"), (4, "follow_up_email", None),
    ]
    assert [m["role"] for m in turns[2].messages] == ["user", "assistant", "user", "assistant", "user"]
    assert "expect" not in turns[2].messages[0]


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        ({"id": "x", "messages": [user("hi", "a_task", "continue")]}, "does not follow"),
        ({"id": "x", "messages": [{"role": "user", "content": "hi"}]}, "needs its expect label"),
        ({"id": "x", "messages": [{"role": "assistant", "content": "hi", "expect": {"task": None, "event": "none"}}]}, "user messages only"),
        ({"id": "x", "messages": [user("hi", None, "maybe")]}, "event"),
        ({"id": "x", "messages": []}, "messages"),
        ({"messages": [user("hi", None, "none")]}, "id"),
    ],
)
def test_a_bad_line_is_named(tmp_path, conversation, message):
    with pytest.raises(DatasetError, match=rf"set.jsonl:1: .*{message}"):
        load_dataset(write(tmp_path, conversation))


def test_duplicate_ids_and_empty_files_are_refused(tmp_path):
    same = {"id": "x", "messages": [user("hi", None, "none")]}
    with pytest.raises(DatasetError, match="appears twice"):
        load_dataset(write(tmp_path, same, same))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match="no conversation"):
        load_dataset(empty)


def test_a_byte_order_mark_and_crlf_lines_are_read(tmp_path):
    path = tmp_path / "bom.jsonl"
    line = json.dumps({"id": "x", "messages": [user("salut\u2028ça va", None, "none")]}, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r\n")
    (conversation,) = load_dataset(path)
    assert conversation.messages[0].content == "salut\u2028ça va"  # U+2028 inside a string is no line break


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"id": "é"}'.encode("latin-1"))
    with pytest.raises(DatasetError, match="latin.jsonl: not UTF-8"):
        load_dataset(path)


# -- the single-turn form: a top-level current_task, the last user message labelled ----------------
def single_turn(current_task, task, event, **extra):
    return {"id": "h1", "current_task": current_task, "messages": [
        {"role": "user", "content": "the minutes please"},
        {"role": "assistant", "content": "here they are"},
        {"role": "user", "content": "now email Dana", "expect": {"task": task, "event": event, **extra}},
    ]}


def test_a_single_turn_line_is_one_turn_with_its_running_task(tmp_path):
    line = single_turn("prepare_meeting_minutes", "follow_up_email", "switch", source="teacher")
    (conversation,) = load_dataset(write(tmp_path, line))
    (turn,) = turns_of([conversation])
    assert (turn.index, turn.current_task, turn.expected.task, turn.expected.event) == (
        2, "prepare_meeting_minutes", "follow_up_email", "switch"
    )
    assert turn.expected.source == "teacher"
    assert as_json(conversation) == line  # written back as read: the running task and the source kept
    null_running = single_turn(None, None, "none")
    assert as_json(load_dataset(write(tmp_path, null_running))[0]) == null_running


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({**single_turn("prepare_meeting_minutes", "follow_up_email", "start")}, "does not follow"),
        ({"id": "h1", "current_task": None, "messages": [
            {"role": "user", "content": "hi", "expect": {"task": None, "event": "none"}},
            {"role": "user", "content": "again", "expect": {"task": None, "event": "none"}},
        ]}, r"messages\[0\]\.expect: .*last user message only"),
        ({"id": "h1", "current_task": None, "messages": [{"role": "user", "content": "hi"}]}, r"messages\[0\]: .*expect"),
        ({**single_turn("Not A Name", None, "end")}, "current_task"),
        ({**single_turn(None, None, "none", source="guessed")}, "source"),
    ],
)
def test_a_bad_single_turn_line_is_named(tmp_path, line, message):
    with pytest.raises(DatasetError, match=rf"set.jsonl:1: .*{message}"):
        load_dataset(write(tmp_path, line))


@pytest.mark.parametrize("label", ["(other)", "(error)", "none", "Follow Up", "x"])
def test_a_label_is_a_task_name_so_no_label_is_taken_for_a_pseudo_label(tmp_path, label):
    with pytest.raises(DatasetError, match=r"set.jsonl:1: messages\[0\]\.expect\.task"):
        load_dataset(write(tmp_path, {"id": "x", "messages": [user("hi", label, "start")]}))


def test_a_dataset_is_read_from_bytes_as_from_a_file(tmp_path):
    path = write(tmp_path, {"id": "x", "messages": [user("hi", None, "none")]})
    assert parse_dataset(path.read_bytes(), "standard input") == load_dataset(path)
    with pytest.raises(DatasetError, match="standard input:1: "):
        parse_dataset(b'{"id": "x"}\n', "standard input")


# -- a turn's allow-list: `tasks` on a labelled user message -----------------------------------------
def allowed(tasks, task, event, current_task=None):
    return {"id": "a1", "current_task": current_task, "messages": [
        {"role": "user", "content": "Can you write up the minutes of this morning's call?", "tasks": tasks,
         "expect": {"task": task, "event": event, "source": "teacher"}},
    ]}  # fmt: skip


def test_a_turn_s_allow_list_is_read_written_back_and_given_to_its_turn(tmp_path):
    line = allowed(["follow_up_email"], None, "end", current_task="create_one_minute_pitch")
    (conversation,) = load_dataset(write(tmp_path, line))
    (turn,) = turns_of([conversation])
    assert turn.tasks == ("follow_up_email",) and turn.current_task == "create_one_minute_pitch"
    assert "tasks" not in turn.messages[0]  # the request's field, not a message's
    assert as_json(conversation) == line
    assert turns_of(load_dataset(write(tmp_path, allowed([], None, "none"))))[0].tasks == ()  # no task allowed
    multi = {"id": "m", "messages": [user("minutes please", "prepare_meeting_minutes", "start"),
                                     {**user("now the email", "follow_up_email", "switch"), "tasks": ["follow_up_email"]}]}
    assert [t.tasks for t in turns_of(load_dataset(write(tmp_path, multi)))] == [None, ("follow_up_email",)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (allowed(["follow_up_email"], "prepare_meeting_minutes", "start"),
         r"messages\[0\]: expect\.task 'prepare_meeting_minutes' is not among the message's tasks"),
        (allowed(["Not A Name"], None, "none"), r"messages\[0\]\.tasks\[0\]"),
        (allowed("follow_up_email", None, "none"), r"messages\[0\]\.tasks"),
        ({"id": "a1", "current_task": None, "messages": [
            {"role": "user", "content": "hi", "tasks": ["follow_up_email"]},
            {"role": "user", "content": "again", "expect": {"task": None, "event": "none"}},
        ]}, r"messages\[0\]: tasks stands on a labelled user message only"),
        ({"id": "a1", "messages": [user("hi", None, "none"), {"role": "assistant", "content": "ok", "tasks": []}]},
         r"messages\[1\]: tasks stands on a labelled user message only"),
    ],
)
def test_a_bad_allow_list_is_named(tmp_path, line, message):
    with pytest.raises(DatasetError, match=rf"set.jsonl:1: {message}"):
        load_dataset(write(tmp_path, line))
