"""The serving settings hold what the router can send: its longest prompt, its adapters, its cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import load_serving, load_stages
from taskrouter.core.prompting import MAX_TRANSCRIPT_BYTES, build_prompt
from taskrouter.core.request import Message, Strategy
from taskrouter.core.task_spec import load_task_file

ROOT = Path(__file__).resolve().parents[2]
# The chat template's own tokens around two messages and the assistant's turn (ChatML: a few each).
TEMPLATE_TOKENS = 32


@pytest.mark.parametrize("strategy", list(Strategy))
def test_the_longest_prompt_fits_the_model_length(strategy):
    """Tokens never outnumber bytes (a byte-level BPE): the longest prompt's bytes, over the task list a
    new stage starts with and the longest conversation the router shows, plus the zero-shot answer,
    must fit OPTION_MAX_MODEL_LEN (longer answers are clamped by vLLM, not refused)."""
    tasks = {task.name: task for task in load_task_file(ROOT / "tasks" / "default_tasks.json", updated_at="")}
    longest = [Message(role="user", content="<" * 4000)] * 3  # escaping makes each character 4 bytes
    prompt = build_prompt(strategy, longest, tasks, max(tasks, key=len))
    prompt_bytes = sum(len(m["content"].encode()) for m in prompt.messages())
    assert len(prompt.context.encode()) <= MAX_TRANSCRIPT_BYTES + 200  # the bound, and the fence around it
    zero_shot_answer = build_prompt(Strategy.ZERO_SHOT, longest, tasks, None).max_answer_tokens
    assert prompt_bytes + TEMPLATE_TOKENS + zero_shot_answer <= int(load_serving().options["OPTION_MAX_MODEL_LEN"])


def test_lora_and_cache_settings_cover_the_stages():
    serving = load_serving()
    assert serving.options["OPTION_ENABLE_LORA"] == "true" and serving.options["OPTION_ENABLE_PREFIX_CACHING"] == "true"
    for stage in load_stages().values():
        assert len(stage.adapters) <= serving.max_loras


def test_training_takes_what_the_endpoint_takes():
    pytest.importorskip("torch")
    from taskrouter.training.train import HyperParameters

    assert HyperParameters().max_length == int(load_serving().options["OPTION_MAX_MODEL_LEN"])
