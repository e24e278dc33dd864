"""`adapter train` shows the model as much of a conversation as the router shows the model serving it:
a small context (SmolLM2's 8,192 tokens) is shown a shorter transcript, and an adapter trained on the
long one would meet prompts at serving that it never saw."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from taskrouter.core.prompting import FULL_TRANSCRIPT, transcript_bound
from taskrouter.core.request import RouteRequest
from taskrouter.core.router import Router
from taskrouter.core.task_spec import load_task_file
from taskrouter.evaluation.dataset import load_dataset, turns_of
from taskrouter.evaluation.targets import FixedTaskSource, request_body

from ..unit.fakes import SETTINGS
from .test_harvest_train import PromptKeeper
from .tiny_base import TASKS_FILE, train_command

torch = pytest.importorskip("torch")  # the training extra; `make test` installs it
SMALL_CONTEXT = 8192  # the tiny base's, and SmolLM2's


def long_conversation(tmp_path):
    """Six long messages (3,600 characters): more than a small context's transcript holds."""
    messages = []
    for turn in range(3):
        messages.append({"role": "user", "content": f"notes {turn}: " + "the pilot starts in June. " * 23,
                         "expect": {"task": "prepare_meeting_minutes", "event": "start" if turn == 0 else "continue"}})
        messages.append({"role": "assistant", "content": "Here are the minutes: " + "decision; " * 55})
    dataset = tmp_path / "long.jsonl"
    dataset.write_text(json.dumps({"id": "long-minutes", "messages": messages[:-1]}) + "\n")
    return dataset


def test_a_small_context_s_training_prompt_is_the_router_s_for_that_model(tmp_path):
    from taskrouter.training.train import examples_of

    tasks = {task.name: task for task in load_task_file(TASKS_FILE, updated_at="")}
    turns = turns_of(load_dataset(long_conversation(tmp_path)))
    bound = transcript_bound(SMALL_CONTEXT)
    keeper = PromptKeeper()
    router = Router(FixedTaskSource(list(tasks.values())), keeper, None, replace(SETTINGS, transcript=bound))
    for turn in turns:
        router.route(RouteRequest.model_validate_json(request_body(turn, None)))
    assert [example.prompt for example in examples_of(turns, tasks, bound)] == keeper.prompts
    assert examples_of(turns, tasks) != keeper.prompts  # the stage's full transcript is another prompt
    assert bound.max_bytes < FULL_TRANSCRIPT.max_bytes


def test_the_adapter_s_manifest_says_the_transcript_it_was_trained_on(tiny_base, tmp_path):
    from taskrouter.cli import main

    out = tmp_path / "adapter"
    assert main(train_command(tiny_base, out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    bound = transcript_bound(SMALL_CONTEXT)
    assert manifest["prompt"]["transcript"] == {"max_bytes": bound.max_bytes, "max_messages": bound.max_messages}
