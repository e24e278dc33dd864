"""The catalogue budget's arithmetic, its bounds, and fitting a registry that outgrew it."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from taskrouter.core.catalogue import catalogue_budget, catalogue_bytes, check_write, fit_catalogue
from taskrouter.core.prompting import TEMPLATE_TOKENS, RoutingPrompt, build_prompt, max_context_bytes
from taskrouter.core.request import MAX_CONTENT_CHARS, MAX_MESSAGES, Message, Strategy
from taskrouter.core.router import Router
from taskrouter.core.tasks import Task
from tests.unit.fakes import SETTINGS, Backend, Registry, request

TASKS = {
    f"task_{index:03d}": Task(f"task_{index:03d}", f"Description of task {index}, " * 8, ("an example request",) * 3)
    for index in range(40)
}


def test_the_budget_is_the_serving_length_less_every_other_part_of_the_prompt():
    parts = TEMPLATE_TOKENS + RoutingPrompt.largest_answer_tokens() + max_context_bytes()
    budget = catalogue_budget(32768)
    assert 0 < budget < 32768 - parts
    assert catalogue_budget(40000) - budget == 40000 - 32768  # every token of serving length is the catalogue's


text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=MAX_CONTENT_CHARS)
messages = st.lists(st.builds(Message, role=st.sampled_from(["user", "assistant"]), content=text), min_size=1, max_size=MAX_MESSAGES)


@settings(max_examples=60, deadline=None)
@given(conversation=messages, current=st.none() | st.from_regex(r"[a-z][a-z0-9_]{2,63}", fullmatch=True))
def test_no_conversation_renders_past_the_context_bound(conversation, current):
    prompt = build_prompt(Strategy.ZERO_SHOT, conversation, {}, current)
    assert len(prompt.context.encode("utf-8", "surrogatepass")) <= max_context_bytes()


def test_a_write_past_the_budget_is_refused_with_the_numbers():
    budget = catalogue_bytes(TASKS.values()) + 10
    check = check_write(TASKS.values(), [Task("one_more", "x" * 100)], [], budget)
    assert check.refused
    assert check.message == f"catalogue {check.size} bytes of {budget}, 10 left"


def test_a_write_that_shrinks_an_over_budget_catalogue_is_let_through():
    budget = catalogue_bytes(TASKS.values()) - 500
    shorter = Task("task_001", "short")
    assert not check_write(TASKS.values(), [shorter], [], budget).refused
    assert check_write(TASKS.values(), [Task("task_001", "x" * 500)], [], budget).refused
    assert not check_write(TASKS.values(), [Task("one_more", "x" * 400)], ["task_002", "task_003"], budget).refused


def test_a_catalogue_within_its_budget_is_left_alone():
    fitted = fit_catalogue(TASKS, catalogue_bytes(TASKS.values()))
    assert fitted.tasks == TASKS and fitted.cut is None


def test_fitting_drops_examples_first():
    budget = catalogue_bytes(TASKS.values()) - 40 * 30  # one example's line of each task
    fitted = fit_catalogue(TASKS, budget)
    assert catalogue_bytes(fitted.tasks.values()) <= budget
    assert all(len(task.examples) == 2 and task.description == TASKS[name].description for name, task in fitted.tasks.items())
    assert fitted.cut == "examples cut to 2 a task"


def test_fitting_then_shortens_descriptions_and_keeps_every_name():
    budget = catalogue_bytes(Task(name, "x" * 60) for name in TASKS)
    fitted = fit_catalogue(TASKS, budget)
    assert set(fitted.tasks) == set(TASKS) and catalogue_bytes(fitted.tasks.values()) <= budget
    assert all(not task.examples and len(task.description) <= 60 for task in fitted.tasks.values())
    assert all(task.description.endswith("…") for task in fitted.tasks.values())
    assert fitted.cut.startswith("examples dropped, descriptions cut to ")
    assert fit_catalogue(TASKS, budget) == fitted  # the same registry is always cut the same way


def test_names_alone_over_the_budget_still_route_and_say_so():
    fitted = fit_catalogue(TASKS, 100)
    assert set(fitted.tasks) == set(TASKS) and fitted.cut.endswith("still over")


def test_the_router_routes_a_registry_over_its_budget_on_the_fitted_catalogue():
    budget = catalogue_bytes(TASKS.values()) // 2
    primary = Backend("sagemaker", "task_007")
    router = Router(Registry(TASKS), primary, Backend("openai", "none"), SETTINGS.__class__(**{**SETTINGS.__dict__, "catalogue_budget": budget}))
    decision = router.route(request())
    assert (decision.task, decision.backend) == ("task_007", "sagemaker")
    assert decision.catalogue_cut is not None
    shown = primary.prompts[0].instructions
    assert "an example request" not in shown and len(shown.encode()) < catalogue_bytes(TASKS.values())


def test_the_router_leaves_a_catalogue_within_its_budget_as_it_is():
    primary = Backend("sagemaker", "task_007")
    settings_ = SETTINGS.__class__(**{**SETTINGS.__dict__, "catalogue_budget": catalogue_budget(32768)})
    decision = Router(Registry(TASKS), primary, None, settings_).route(request())
    assert decision.catalogue_cut is None and "an example request" in primary.prompts[0].instructions
