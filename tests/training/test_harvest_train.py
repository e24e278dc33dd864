"""`taskrouter adapter train` on what `taskrouter data harvest` writes: single-turn lines, each with its
running task, and the harvested task file; one step on the tiny base model."""

from __future__ import annotations

import json

import pytest

from taskrouter.cli import main
from taskrouter.core.backends import Answer
from taskrouter.core.request import RouteRequest
from taskrouter.core.router import Router
from taskrouter.core.task_spec import load_task_file
from taskrouter.evaluation.dataset import load_dataset, turns_of
from taskrouter.evaluation.targets import FixedTaskSource, request_body

from ..integration.capture_records import EMAIL, MINUTES, PITCH, ago, record, write_local
from ..unit.fakes import SETTINGS

pytest.importorskip("torch")  # the training extra; `make test` installs it


def test_an_adapter_trains_on_a_harvested_dataset_and_its_task_file(tiny_base, tmp_path, monkeypatch):
    state = tmp_path / "local-state"
    monkeypatch.setenv("TASKROUTER_LOCAL_DIR", str(state))
    history = ({"role": "user", "content": "email Dana about Tuesday"}, {"role": "assistant", "content": "Sent."})
    for captured in (
        record("minutes from my acme call pls", at=ago(hours=3), decided=MINUTES, teacher=MINUTES),
        record("now the follow up to Sam", at=ago(hours=2), decided=MINUTES, teacher=EMAIL, current_task=MINUTES),
        record("thanks, that's all", at=ago(hours=1), decided=None, fallback_reason="timeout", current_task=EMAIL,
               history=history),
        record("a one minute pitch for our app", at=ago(minutes=5), decided=PITCH, teacher=PITCH),
    ):  # fmt: skip
        write_local(state, captured)
    dataset, tasks = tmp_path / "harvested.jsonl", tmp_path / "harvested.tasks.json"
    assert main(["data", "harvest", "--local", "--out", str(dataset)]) == 0
    turns = turns_of(load_dataset(dataset))
    assert [turn.current_task for turn in turns] == [MINUTES, None, EMAIL, None]  # the disagreement first

    out = tmp_path / "adapter"
    assert main(["adapter", "train", "--dataset", str(dataset), "--tasks", str(tasks), "--base-model", str(tiny_base),
                 "--out", str(out), "--max-steps", "1", "--epochs", "1", "--rank", "4", "--batch-size", "2",
                 "--no-archive"]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["result"]["steps"] == 1 and manifest["dataset"]["file"] == "harvested.jsonl"
    assert manifest["split"]["train_examples"] + manifest["split"]["validation_examples"] == len(turns) == 4


class PromptKeeper:
    """A primary that keeps the prompt the router built, and answers none."""

    name = "sagemaker"

    def __init__(self) -> None:
        self.prompts = []

    def decide(self, prompt, timeout_s):
        self.prompts.append(prompt.messages())
        return Answer(None)


def test_training_prompts_show_the_tasks_the_router_showed(tmp_path, monkeypatch):
    """The turn routed with `tasks: ["follow_up_email"]` ("Can you write up the minutes…"), a pitch
    running: its example's prompt is the router's own for that request over the harvested task file, byte
    for byte: the follow-up email alone offered, the pitch named as running. Over the whole catalogue it
    would teach "minutes -> none" with the minutes on offer."""
    from taskrouter.training.train import examples_of

    state = tmp_path / "local-state"
    monkeypatch.setenv("TASKROUTER_LOCAL_DIR", str(state))
    minutes = "Can you write up the minutes of this morning's call?"
    write_local(state, record(minutes, at=ago(hours=2), decided=None, teacher=None, current_task=PITCH,
                              requested_tasks=[EMAIL]))  # fmt: skip
    write_local(state, record("minutes from my acme call pls", at=ago(hours=1), decided=MINUTES, teacher=MINUTES))
    dataset = tmp_path / "harvested.jsonl"
    assert main(["data", "harvest", "--local", "--out", str(dataset)]) == 0
    tasks = {task.name: task for task in load_task_file(tmp_path / "harvested.tasks.json", updated_at="")}
    assert MINUTES in tasks and PITCH in tasks

    turns = turns_of(load_dataset(dataset))
    examples = examples_of(turns, tasks)
    keeper = PromptKeeper()
    router = Router(FixedTaskSource(list(tasks.values())), keeper, None, SETTINGS)
    for turn in turns:  # the request eval sends for the turn, routed by the router
        router.route(RouteRequest.model_validate_json(request_body(turn, None)))
    assert [example.prompt for example in examples] == keeper.prompts
    restricted = next(example for example, turn in zip(examples, turns) if turn.tasks is not None)
    system, context = restricted.prompt[0]["content"], restricted.prompt[1]["content"]
    assert EMAIL in system and MINUTES not in system and PITCH not in system
    assert f"The task running now: {PITCH}." in context
    assert restricted.answer == "none"
