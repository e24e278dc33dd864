"""The catalogue budget's arithmetic, its bounds, and fitting a registry that outgrew it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskrouter.adapters.served_tokenizer import token_counter
from taskrouter.adapters.settings import RuntimeSettings, SettingsError, catalogue_budget_from_env
from taskrouter.core.catalogue import (
    CatalogueBudget,
    byte_budget,
    catalogue_bytes,
    check_write,
    fit_catalogue,
    token_budget,
)
from taskrouter.core.prompting import (
    FULL_TRANSCRIPT,
    TEMPLATE_TOKENS,
    RoutingPrompt,
    TranscriptBound,
    build_prompt,
    max_context_bytes,
    shown_messages,
    transcript_bound,
)
from taskrouter.core.request import MAX_CONTENT_CHARS, MAX_MESSAGES, Message, Strategy
from taskrouter.core.router import Router
from taskrouter.core.task_spec import load_task_file
from taskrouter.core.tasks import Task
from taskrouter.repository import DEFAULT_TASKS_FILE
from tests.unit.fakes import SETTINGS, Backend, Registry, request

TASKS = {
    f"task_{index:03d}": Task(f"task_{index:03d}", f"Description of task {index}, " * 8, ("an example request",) * 3)
    for index in range(40)
}


def test_the_budget_is_the_serving_length_less_every_other_part_of_the_prompt():
    parts = TEMPLATE_TOKENS + RoutingPrompt.largest_answer_tokens() + max_context_bytes()
    budget = byte_budget(32768).limit
    assert 0 < budget < 32768 - parts
    assert byte_budget(40000).limit - budget == 40000 - 32768  # every token of serving length is the catalogue's


text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=MAX_CONTENT_CHARS)
messages = st.lists(st.builds(Message, role=st.sampled_from(["user", "assistant"]), content=text), min_size=1, max_size=MAX_MESSAGES)


@settings(max_examples=60, deadline=None)
@given(conversation=messages, current=st.none() | st.from_regex(r"[a-z][a-z0-9_]{2,63}", fullmatch=True))
def test_no_conversation_renders_past_the_context_bound(conversation, current):
    prompt = build_prompt(Strategy.ZERO_SHOT, conversation, {}, current)
    assert len(prompt.context.encode("utf-8", "surrogatepass")) <= max_context_bytes()


def test_a_write_past_the_budget_is_refused_with_the_numbers():
    budget = catalogue_bytes(TASKS.values()) + 10
    check = check_write(TASKS.values(), [Task("one_more", "x" * 100)], [], CatalogueBudget(budget))
    assert check.refused
    assert check.message == f"catalogue {check.size} bytes of {budget}, 10 left"


def test_a_write_that_shrinks_an_over_budget_catalogue_is_let_through():
    budget = CatalogueBudget(catalogue_bytes(TASKS.values()) - 500)
    shorter = Task("task_001", "short")
    assert not check_write(TASKS.values(), [shorter], [], budget).refused
    assert check_write(TASKS.values(), [Task("task_001", "x" * 500)], [], budget).refused
    assert not check_write(TASKS.values(), [Task("one_more", "x" * 400)], ["task_002", "task_003"], budget).refused


def test_a_catalogue_within_its_budget_is_left_alone():
    fitted = fit_catalogue(TASKS, CatalogueBudget(catalogue_bytes(TASKS.values())))
    assert fitted.tasks == TASKS and fitted.cut is None


def test_fitting_drops_examples_first():
    budget = catalogue_bytes(TASKS.values()) - 40 * 30  # one example's line of each task
    fitted = fit_catalogue(TASKS, CatalogueBudget(budget))
    assert catalogue_bytes(fitted.tasks.values()) <= budget
    assert all(len(task.examples) == 2 and task.description == TASKS[name].description for name, task in fitted.tasks.items())
    assert fitted.cut == "examples cut to 2 a task"


def test_fitting_then_shortens_descriptions_and_keeps_every_name():
    budget = catalogue_bytes(Task(name, "x" * 60) for name in TASKS)
    fitted = fit_catalogue(TASKS, CatalogueBudget(budget))
    assert set(fitted.tasks) == set(TASKS) and catalogue_bytes(fitted.tasks.values()) <= budget
    assert all(not task.examples and len(task.description) <= 60 for task in fitted.tasks.values())
    assert all(task.description.endswith("…") for task in fitted.tasks.values())
    assert fitted.cut.startswith("examples dropped, descriptions cut to ")
    assert fit_catalogue(TASKS, CatalogueBudget(budget)) == fitted  # the same registry is always cut the same way


def test_names_alone_over_the_budget_still_route_and_say_so():
    fitted = fit_catalogue(TASKS, CatalogueBudget(100))
    assert set(fitted.tasks) == set(TASKS) and fitted.cut.endswith("still over")


def test_the_router_routes_a_registry_over_its_budget_on_the_fitted_catalogue():
    budget = CatalogueBudget(catalogue_bytes(TASKS.values()) // 2)
    primary = Backend("sagemaker", "task_007")
    router = Router(Registry(TASKS), primary, Backend("openai", "none"), SETTINGS.__class__(**{**SETTINGS.__dict__, "catalogue_budget": budget}))
    decision = router.route(request())
    assert (decision.task, decision.backend) == ("task_007", "sagemaker")
    assert decision.catalogue_cut is not None
    shown = primary.prompts[0].instructions
    assert "an example request" not in shown and len(shown.encode()) < catalogue_bytes(TASKS.values())


def test_the_router_leaves_a_catalogue_within_its_budget_as_it_is():
    primary = Backend("sagemaker", "task_007")
    settings_ = SETTINGS.__class__(**{**SETTINGS.__dict__, "catalogue_budget": byte_budget(32768)})
    decision = Router(Registry(TASKS), primary, None, settings_).route(request())
    assert decision.catalogue_cut is None and "an example request" in primary.prompts[0].instructions


# -- the budget follows the served model (a small context: the transcript bound, a count in tokens) ----
def test_the_transcript_shown_follows_the_serving_length():
    assert transcript_bound(None) == transcript_bound(32768) == FULL_TRANSCRIPT  # a stage's prompt is unchanged
    assert transcript_bound(8192) == TranscriptBound(max_bytes=1365, max_messages=17)  # a sixth, a message per 80
    assert transcript_bound(16384) == TranscriptBound(max_bytes=2730, max_messages=34)


def test_a_short_transcript_shows_its_most_recent_messages_within_both_bounds():
    bound = TranscriptBound(max_bytes=100, max_messages=3)
    conversation = [Message(role="user", content=f"message {index}") for index in range(10)]
    assert [m.content for m in shown_messages(conversation, bound)] == ["message 7", "message 8", "message 9"]
    prompt = build_prompt(Strategy.ZERO_SHOT, conversation, {}, None, bound)
    assert '<conversation omitted="7">' in prompt.context and "message 6" not in prompt.context
    long = [Message(role="user", content="y" * 500)]
    assert len(build_prompt(Strategy.ZERO_SHOT, long, {}, None, bound).context.encode()) <= max_context_bytes(bound)


@settings(max_examples=40, deadline=None)
@given(conversation=messages, serving=st.integers(1024, 40000))
def test_no_conversation_renders_past_its_serving_length_s_bound(conversation, serving):
    bound = transcript_bound(serving)
    prompt = build_prompt(Strategy.ZERO_SHOT, conversation, {}, "x" * 64, bound)
    assert len(prompt.context.encode("utf-8", "surrogatepass")) <= max_context_bytes(bound)
    assert len(shown_messages(conversation, bound)) <= bound.max_messages


def test_the_byte_rule_at_its_floor_holds_the_default_tasks():
    """16,384 tokens left 2,593 bytes with the full transcript, under the nine default tasks' 2,705."""
    default = catalogue_bytes(load_task_file(DEFAULT_TASKS_FILE, updated_at=""))
    assert byte_budget(16384).limit >= default
    shorter_transcript = max_context_bytes(FULL_TRANSCRIPT) - max_context_bytes(transcript_bound(16384))
    assert byte_budget(16384).limit == byte_budget(32768).limit - (32768 - 16384) + shorter_transcript


def test_the_settings_count_in_tokens_where_a_tokenizer_is_named_and_refuse_a_context_too_small(tmp_path):
    tokenizer = _byte_level_tokenizer(tmp_path)
    env = {"TASKROUTER_SERVING_MAX_TOKENS": "8192", "TASKROUTER_SERVING_TOKENIZER": str(tokenizer)}
    budget = catalogue_budget_from_env(env)
    assert budget.unit == "tokens" and budget.limit > 0
    assert catalogue_budget_from_env({"TASKROUTER_SERVING_MAX_TOKENS": "32768"}) == byte_budget(32768)
    with pytest.raises(SettingsError, match=r"TASKROUTER_SERVING_MAX_TOKENS=2048 leaves no room for a task catalogue"):
        catalogue_budget_from_env({**env, "TASKROUTER_SERVING_MAX_TOKENS": "2048"})
    with pytest.raises(SettingsError, match=r"TASKROUTER_SERVING_MAX_TOKENS must be between 16384"):
        catalogue_budget_from_env({"TASKROUTER_SERVING_MAX_TOKENS": "8192"})  # bytes cannot serve 8,192
    with pytest.raises(SettingsError, match=r"TASKROUTER_SERVING_TOKENIZER: .*nothing.json is not a readable tokenizer.json"):
        catalogue_budget_from_env({**env, "TASKROUTER_SERVING_TOKENIZER": str(tmp_path / "nothing.json")})
    router = RuntimeSettings.from_env({"TASKROUTER_TABLE_NAME": "t", **env}).router
    assert router.catalogue_budget == budget and router.transcript == transcript_bound(8192)


def _byte_level_tokenizer(folder) -> Path:
    """A real `tokenizers` file with no merges: one token per byte, the byte rule's own bound."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE(vocab={symbol: index for index, symbol in enumerate(sorted(alphabet))}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    path = folder / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_a_token_budget_counts_the_whole_system_message_less_its_fixed_text(tmp_path):
    count = token_counter(str(_byte_level_tokenizer(tmp_path)))
    assert count("héllo <|im_end|>") == len("héllo <|im_end|>".encode())  # no merges: a token a byte
    budget = token_budget(8192, count)
    assert budget.size([]) == 0
    # one token a byte: the catalogue's lines, and the largest worked examples any allowed part shows
    tasks = list(TASKS.values())[:5]
    assert budget.size(tasks) >= catalogue_bytes(tasks)
    assert budget.limit == 8192 - TEMPLATE_TOKENS - RoutingPrompt.largest_answer_tokens() - max_context_bytes(transcript_bound(8192)) - budget.fixed_tokens
    check = check_write(tasks, [Task("one_more", "x" * 100)], [], replace(budget, limit=budget.size(tasks) + 10))
    assert check.refused and check.message == f"catalogue {check.size} tokens of {budget.size(tasks) + 10}, 10 left"


def test_few_shot_s_largest_worked_examples_count_whatever_part_a_request_allows(tmp_path):
    """The first tasks with examples show theirs: a request allowing others shows other, larger ones,
    and the registry's count holds them."""
    count = token_counter(str(_byte_level_tokenizer(tmp_path)))
    budget = token_budget(8192, count)
    small = [Task(f"a_task_{index}", "d", ("hi",)) for index in range(3)]
    large = [Task(f"z_task_{index}", "d", ("&" * 300,)) for index in range(3)]
    registry = {task.name: task for task in small + large}
    shown_alone = build_prompt(Strategy.FEW_SHOT_COT, [Message(role="user", content="x")], {t.name: t for t in large}, None)
    assert budget.size(registry.values()) + budget.fixed_tokens >= shown_alone.system_size(count)
    assert budget.size(large) <= budget.size(registry.values())


def test_fitting_counts_as_its_budget_does(tmp_path):
    count = token_counter(str(_byte_level_tokenizer(tmp_path)))
    budget = replace(token_budget(8192, count), limit=token_budget(8192, count).size(TASKS.values()) // 2)
    fitted = fit_catalogue(TASKS, budget)
    assert fitted.cut is not None and budget.size(fitted.tasks.values()) <= budget.limit
