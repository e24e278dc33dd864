"""The example dataset: enough conversations, every event, labels from the default task list."""

import json
from pathlib import Path

from taskrouter.core.events import derive_event
from taskrouter.evaluation.dataset import load_dataset, turns_of

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "datasets" / "example.jsonl"
DEFAULT_TASKS = {task["name"] for task in json.loads((ROOT / "tasks" / "default_tasks.json").read_text())["tasks"]}


def test_the_example_dataset_is_big_enough_and_consistent():
    conversations = load_dataset(DATASET)
    assert len(conversations) >= 40
    turns = turns_of(conversations)
    assert {turn.expected.event for turn in turns} == {"start", "continue", "switch", "end", "none"}
    for turn in turns:
        assert turn.expected.task is None or turn.expected.task in DEFAULT_TASKS, turn
        assert turn.expected.event == derive_event(turn.current_task, turn.expected.task), turn
        assert turn.messages[-1]["role"] == "user"
    assert any("é" in turn.messages[-1]["content"] for turn in turns), "some conversations are in French"
