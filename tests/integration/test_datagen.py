"""`taskrouter data generate` against a fake OpenAI-compatible server: labels from the plan, the same
seed giving the same file, near-duplicates dropped, answers off the plan retried then dropped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from taskrouter.cli import main
from taskrouter.core.events import derive_event
from taskrouter.core.task_spec import load_task_file
from taskrouter.datagen.generate import SCENARIOS, plans
from taskrouter.evaluation.dataset import load_dataset

from .servers import OpenAIDouble, Received, Reply

TASKS_FILE = Path(__file__).resolve().parents[2] / "tasks" / "default_tasks.json"
BROKEN_TASK = "answer_prospect_message"  # the fake answers plans with it off the plan (one user turn short)
FAILING_TASK = "qualify_lead"  # the fake's server fails on plans that start with it


def fake_model(received: Received) -> Reply:
    """A deterministic model: its words are a function of what it is asked (the plan's turns and
    writer) and the seed. It writes the same words for every no-task plan, whoever writes: those
    are near-duplicates. It fails (500) on plans that start with FAILING_TASK."""
    body = received.json()
    assert body["response_format"]["json_schema"]["strict"] is True
    prompt = body["messages"][-1]["content"]
    intents = json.loads(re.search(r"Plan as JSON: (\[.*\])", prompt).group(1))
    if intents[0] == FAILING_TASK:
        return OpenAIDouble.server_error()
    writer = re.search(r"The user: (.*)\.\n", prompt).group(1)
    messages = []
    for number, intent in enumerate(intents):
        if intent is None:
            text = "whats the weather tomorrow"
        else:
            text = f"hey can u do the {intent.replace('_', ' ')} thing, says {writer} (turn {number}, take {body['seed'] % 7})"
        messages.append({"role": "user", "content": text})
        if number < len(intents) - 1:
            messages.append({"role": "assistant", "content": "Sure, here it is."})
    if BROKEN_TASK in intents and len(intents) > 1:
        messages = messages[:1]
    return OpenAIDouble.completion(json.dumps({"messages": messages}))


@pytest.fixture
def model(monkeypatch):
    double = OpenAIDouble()
    double.always(fake_model)
    monkeypatch.setenv("OPENAI_BASE_URL", double.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-generate")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield double
    double.close()


def generate(out: Path, seed: int, capsys) -> tuple[str, str]:
    code = main(["data", "generate", "--out", str(out), "--per-scenario", "6", "--seed", str(seed), "--no-progress"])
    assert code == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_labels_come_from_the_plan_and_near_duplicates_are_dropped(model, tmp_path, capsys):
    out = tmp_path / "synthetic.jsonl"
    printed, told = generate(out, 1, capsys)
    planned = plans(load_task_file(TASKS_FILE, updated_at=""), SCENARIOS, 6, 1)
    conversations = load_dataset(out)  # the dataset format, every event consistent with its task
    by_id = {plan.id: plan for plan in planned}
    for conversation in conversations:
        plan = by_id[conversation.id]
        labels = [m.expect for m in conversation.messages if m.role == "user"]
        assert [label.task for label in labels] == list(plan.intents)
        running = None
        for label in labels:
            assert label.event == derive_event(running, label.task)
            running = label.task
    # every no-task plan after the first is a near-duplicate; plans with the broken task over two
    # turns are off the plan even on a retry; plans starting with the failing task are lost alone
    failed = sum(plan.intents[0] == FAILING_TASK for plan in planned)
    unusable = sum(BROKEN_TASK in plan.intents and len(plan.intents) > 1 and plan.intents[0] != FAILING_TASK for plan in planned)
    duplicates = sum(plan.intents == (None,) for plan in planned) - 1
    assert len(conversations) == len(planned) - duplicates - unusable - failed
    assert duplicates > 0 and unusable > 0 and failed > 0
    assert f"{duplicates} near-duplicates and {unusable} answers off the plan dropped" in printed
    assert f"{failed} plans failed, first: InternalServerError" in told
    writers = {plan.writer for plan in planned}
    assert len(writers) > 10 and any("French" in writer for writer in writers)  # plans vary who writes


def test_the_same_seed_gives_the_same_file(model, tmp_path, capsys):
    first, again, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    generate(first, 3, capsys)
    generate(again, 3, capsys)
    generate(other, 4, capsys)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_bad_arguments_are_one_line(model, tmp_path, capsys):
    assert main(["data", "generate", "--out", str(tmp_path / "x.jsonl"), "--scenarios", "start,maybe"]) == 1
    assert "--scenarios" in capsys.readouterr().err
    assert main(["data", "generate", "--out", str(tmp_path / "no" / "x.jsonl")]) == 1
    assert "is not a folder" in capsys.readouterr().err
