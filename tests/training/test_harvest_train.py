"""`taskrouter adapter train` on what `taskrouter data harvest` writes: single-turn lines, each with its
running task, and the harvested task file; one step on the tiny base model."""

from __future__ import annotations

import json

import pytest

from taskrouter.cli import main
from taskrouter.evaluation.dataset import load_dataset, turns_of

from ..integration.capture_records import EMAIL, MINUTES, PITCH, ago, record, write_local

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
