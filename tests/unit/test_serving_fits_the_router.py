"""The serving settings hold what the router can send: its longest prompt over the largest catalogue
the budget admits, its adapters, its cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import load_serving, load_stages
from taskrouter.core.catalogue import byte_budget, catalogue_bytes, check_write
from taskrouter.core.prompting import MAX_TRANSCRIPT_BYTES, TEMPLATE_TOKENS, RoutingPrompt, build_prompt
from taskrouter.core.request import MAX_CONTENT_CHARS, MAX_MESSAGES, Message, Strategy
from taskrouter.core.task_spec import MAX_DESCRIPTION_CHARS, MAX_EXAMPLE_CHARS, MAX_EXAMPLES, load_task_file
from taskrouter.core.tasks import MAX_TASK_NAME_CHARS, Task

ROOT = Path(__file__).resolve().parents[2]
SERVING_TOKENS = load_serving().max_model_len
BUDGET = byte_budget(SERVING_TOKENS)


def _widest_task(index: int) -> Task:
    """A task at every field limit, in the characters that render widest ('&' is escaped as '&amp;',
    '"' in a quoted example as '&quot;')."""
    return Task(
        f"{'t' * (MAX_TASK_NAME_CHARS - 4)}{index:04d}",
        "&" * MAX_DESCRIPTION_CHARS,
        tuple('"' * MAX_EXAMPLE_CHARS for _ in range(MAX_EXAMPLES)),
    )


def _largest_admitted_registry() -> dict[str, Task]:
    """Tasks added one by one as the registry admits them (the same check as a PUT), widest first, then
    smaller ones to fill what is left: the largest catalogue the budget lets a registry hold."""
    registry: dict[str, Task] = {}
    candidates = [_widest_task(index) for index in range(200)]
    candidates += [Task(f"small_task_{index:04d}", "&" * 20) for index in range(2000)]
    for task in candidates:
        if not check_write(registry.values(), [task], [], BUDGET).refused:
            registry[task.name] = task
    return registry


LARGEST = _largest_admitted_registry()
# The longest conversation the API takes, in the widest characters: its transcript is at the bound.
LONGEST = [Message(role="assistant", content="<" * MAX_CONTENT_CHARS)] * (MAX_MESSAGES - 1) + [
    Message(role="user", content="<" * MAX_CONTENT_CHARS)
]
MANY_SHORT = [Message(role="assistant", content="&" * (MAX_TRANSCRIPT_BYTES // MAX_MESSAGES // 5))] * (MAX_MESSAGES - 1) + [
    Message(role="user", content="&" * (MAX_TRANSCRIPT_BYTES // MAX_MESSAGES // 5))
]


def test_the_largest_admitted_catalogue_fills_the_budget():
    size = catalogue_bytes(LARGEST.values())
    assert BUDGET.limit > 0 and BUDGET.limit - 200 < size <= BUDGET.limit  # full: no small task more fits
    assert check_write(LARGEST.values(), [Task("small_task_9999", "&" * 20)], [], BUDGET).refused


@pytest.mark.parametrize("allow_list", [None, "some"], ids=["every task", "allow-list"])
@pytest.mark.parametrize("conversation", [LONGEST, MANY_SHORT], ids=["longest messages", "most messages"])
@pytest.mark.parametrize("strategy", list(Strategy))
def test_the_longest_prompt_fits_the_model_length(strategy, conversation, allow_list):
    """Tokens never outnumber bytes (a byte-level BPE): the longest prompt's bytes over the largest
    catalogue the registry admits, the longest conversation the API takes and the longest running
    task, plus the chat template and the largest answer cap, fit OPTION_MAX_MODEL_LEN."""
    allowed = LARGEST if allow_list is None else dict(list(LARGEST.items())[:: 3])
    prompt = build_prompt(strategy, conversation, allowed, max(allowed, key=len))
    assert catalogue_bytes(allowed.values()) <= BUDGET.limit
    assert prompt.system_bytes + len(prompt.context.encode()) + TEMPLATE_TOKENS + RoutingPrompt.largest_answer_tokens() <= SERVING_TOKENS


def test_the_default_tasks_fit_with_room_to_grow():
    tasks = load_task_file(ROOT / "tasks" / "default_tasks.json", updated_at="")
    assert catalogue_bytes(tasks) * 4 <= BUDGET.limit


def test_lora_and_cache_settings_cover_the_stages():
    serving = load_serving()
    assert serving.options["OPTION_ENABLE_LORA"] == "true" and serving.options["OPTION_ENABLE_PREFIX_CACHING"] == "true"
    for stage in load_stages().values():
        assert len(stage.adapters) <= serving.max_loras


def test_training_takes_what_the_endpoint_takes():
    pytest.importorskip("torch")
    from taskrouter.training.train import HyperParameters

    assert HyperParameters().max_length == SERVING_TOKENS
