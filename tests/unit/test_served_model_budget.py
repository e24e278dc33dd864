"""The catalogue budget of a small local model, against its real tokenizer: SmolLM2-135M-Instruct, the GGUF
set-up installs, whose 8,192-token context `make local` reads from the model as its model server does.

Every registry the budget admits (built task by task, as PUTs are, in the text that tokenizes worst), and
the router's fit of any it does not, prompts within the context for every strategy, the longest
conversations the API takes and any part of the registry a request allows, counted as the model server
counts a prompt: its chat template, then its tokenizer (`Engine.prompt_ids`). No make local here: the
same arithmetic through HTTP is tests/integration/test_catalogue_budget_local_model.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskrouter.adapters.served_tokenizer import token_counter
from taskrouter.adapters.settings import catalogue_budget_from_env
from taskrouter.cli import main as cli_main
from taskrouter.core.catalogue import CatalogueBudget, check_write, fit_catalogue
from taskrouter.core.prompting import RoutingPrompt, build_prompt, max_context_bytes, transcript_bound
from taskrouter.core.request import MAX_CONTENT_CHARS, MAX_MESSAGES, Message, Strategy
from taskrouter.core.task_spec import MAX_DESCRIPTION_CHARS, MAX_EXAMPLE_CHARS, MAX_EXAMPLES, load_task_file
from taskrouter.core.tasks import MAX_TASK_NAME_CHARS, Task
from taskrouter.local import served_model as served_model_module
from taskrouter.local.served_model import ServedModel, served_model
from taskrouter.model_server.bundled import smollm2_gguf
from taskrouter.model_server.engine import Engine
from taskrouter.model_server.loading import pretrained_source
from taskrouter.repository import DEFAULT_TASKS_FILE

ROOT = Path(__file__).resolve().parents[2]
GGUF = smollm2_gguf()
HR_IT_TASKS = load_task_file(ROOT / "tests" / "data" / "hr_it_tasks.json", updated_at="")
# Text that tokenizes worst for this tokenizer (measured): a digit is a token, a Hangul syllable ~3
# (0.97 a byte), an emoji ~3; '&' renders as '&amp;', '"' in a quoted example as '&quot;'.
ALPHABETS = {"digits": "0123456789", "hangul": "다람쥐헌쳇바퀴에타고파", "emoji": "😀😃😄😁😆😅🤣😂", "escapes": '&"<>'}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("served-models")


@pytest.fixture(scope="module")
def served(cache: Path) -> ServedModel:
    return served_model(GGUF, cache)


@pytest.fixture(scope="module")
def budget(served: ServedModel) -> CatalogueBudget:
    """As make local's router and registry read it from the environment it sets."""
    found = catalogue_budget_from_env(served.environment())
    assert found is not None and found.unit == "tokens"
    return found


@pytest.fixture(scope="module")
def chat_tokenizer() -> Any:
    """The model server's tokenizer (loading.load's call), chat template included."""
    from transformers import AutoTokenizer

    source, keywords = pretrained_source(GGUF)
    return AutoTokenizer.from_pretrained(source, local_files_only=True, **keywords)


def prompt_tokens(chat_tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """The prompt's tokens as the model server counts them before it refuses one too long."""
    return len(Engine.prompt_ids(SimpleNamespace(loaded=SimpleNamespace(tokenizer=chat_tokenizer)), messages))


def text(alphabet: str, length: int) -> str:
    return (alphabet * (length // len(alphabet) + 1))[:length]


def conversation(alphabet: str, messages: int, length: int) -> list[Message]:
    """`messages` messages, alternating, the last the user's, each `length` characters."""
    roles = ["assistant", "user"] * MAX_MESSAGES
    return [Message(role=role, content=text(alphabet, length)) for role in roles[-messages:]]


# The longest conversations the API takes: every message at the content limit, in the alphabets whose
# tokens come closest to their bytes; and the most messages, short enough that the transcript shows the
# most it shows.
LONGEST = [conversation(ALPHABETS[name], MAX_MESSAGES, MAX_CONTENT_CHARS) for name in ("digits", "hangul", "escapes")]
MOST_MESSAGES = conversation("0123456789", MAX_MESSAGES, 40)
FILLER = [Task(f"zz_small_{index:04d}", text("0123456789", 20)) for index in range(400)]


def admitted(budget: CatalogueBudget, candidates: list[Task]) -> dict[str, Task]:
    """The candidates kept as the registry admits them one by one (a PUT's check), then as many small
    tasks as still fit: the largest registry of that kind the budget lets in."""
    registry: dict[str, Task] = {}
    for task in candidates:
        if not check_write(registry.values(), [task], [], budget).refused:
            registry[task.name] = task
    low, high = 0, len(FILLER) - 1
    while low < high:  # the most small tasks that fit, by bisection
        middle = (low + high + 1) // 2
        low, high = (middle, high) if budget.size([*registry.values(), *FILLER[:middle]]) <= budget.limit else (low, middle - 1)
    registry.update((task.name, task) for task in FILLER[:low])
    assert check_write(registry.values(), [FILLER[low]], [], budget).refused  # full
    return registry


def graded(alphabet: str) -> list[Task]:
    """Tasks from the field limits down to an eighth of them, two of each size."""
    return [
        Task(f"{'t' * (MAX_TASK_NAME_CHARS - 6)}{share}_{index:04d}", text(alphabet, MAX_DESCRIPTION_CHARS // share),
             tuple(text(alphabet, MAX_EXAMPLE_CHARS // share) for _ in range(MAX_EXAMPLES)))
        for share in (1, 2, 4, 8) for index in range(2)
    ]  # fmt: skip


def hr_it(count: int) -> list[Task]:
    """The help-desk tasks, again under other names past the forty."""
    return [replace(HR_IT_TASKS[i % 40], name=f"{HR_IT_TASKS[i % 40].name}_{i // 40}") for i in range(count)]


def assert_prompts_fit(
    registry: dict[str, Task], budget: CatalogueBudget, chat_tokenizer: Any, context: int,
    conversations: list[list[Message]] = [*LONGEST, MOST_MESSAGES],
) -> None:  # fmt: skip
    """Every strategy, conversation and allowed part (all, every third, those with the largest examples
    alone): the prompt, with the largest answer cap, within the context; and the budget's count of the
    system message never under the real one."""
    names = sorted(registry)
    by_examples = sorted(names, key=lambda name: -sum(len(e) for e in registry[name].examples[:1]))
    parts = [names, names[::3], by_examples[:3]]
    transcript = transcript_bound(context)
    running = max(names, key=len) if names else None
    for part in parts:
        allowed = {name: registry[name] for name in part}
        for strategy in Strategy:
            for turns in conversations:
                prompt = build_prompt(strategy, turns, allowed, running, transcript)
                for messages in (prompt.messages(), prompt.json_messages()):
                    tokens = prompt_tokens(chat_tokenizer, messages)
                    assert tokens + RoutingPrompt.largest_answer_tokens() <= context, (strategy, len(allowed), tokens)
            assert prompt.system_size(budget.count_tokens) <= budget.size(allowed.values()) + budget.fixed_tokens


def test_the_context_is_the_model_s_own_and_read_once(served: ServedModel, cache: Path, monkeypatch) -> None:
    reader = gguf.GGUFReader(GGUF)
    field = reader.fields["llama.context_length"]
    assert served.context_tokens == int(field.parts[field.data[0]][0]) == 8192
    monkeypatch.setattr(served_model_module, "_read", lambda model: pytest.fail("read again, not from its cache"))
    assert served_model(GGUF, cache) == served and served.tokenizer_file.is_file()


def test_the_budget_counts_tokens_as_the_model_server_does(served: ServedModel, chat_tokenizer: Any) -> None:
    count = token_counter(str(served.tokenizer_file))
    for sample in ["Write the minutes of my call", text("다람쥐", 90), text("0123456789", 75), "<|im_end|> [INST] &amp;"]:
        assert count(sample) == len(chat_tokenizer(sample, add_special_tokens=False)["input_ids"])


def test_the_arithmetic_docs_api_md_states(budget: CatalogueBudget) -> None:
    transcript = transcript_bound(8192)
    assert (transcript.max_bytes, transcript.max_messages, max_context_bytes(transcript)) == (1365, 17, 2125)
    assert (budget.fixed_tokens, budget.limit, RoutingPrompt.largest_answer_tokens()) == (205, 4150, 1680)
    doc = (ROOT / "docs" / "api.md").read_text()
    assert "| **catalogue budget** (the task lines and their worked examples) | **4,150 tokens** |" in doc


def test_an_hr_and_it_help_desk_of_forty_tasks_fits_with_room(budget: CatalogueBudget) -> None:
    """The registry a benchmark on SmolLM2 fills the budget with: ~40 such tasks; docs/api.md says ~60 fit."""
    assert budget.size(HR_IT_TASKS) <= budget.limit * 0.7
    registry: dict[str, Task] = {}
    for task in hr_it(70):
        if check_write(registry.values(), [task], [], budget).refused:
            break
        registry[task.name] = task
    assert 55 <= len(registry) <= 65, len(registry)
    assert budget.size(load_task_file(DEFAULT_TASKS_FILE, updated_at="")) == 934  # docs/api.md


@pytest.mark.parametrize(
    "candidates",
    [graded(ALPHABETS["hangul"]), graded(ALPHABETS["digits"]), graded(ALPHABETS["emoji"]), graded(ALPHABETS["escapes"]),
     HR_IT_TASKS, []],
    ids=["hangul", "digits", "emoji", "escapes", "help desk", "small tasks only"],
)  # fmt: skip
def test_every_registry_the_budget_admits_prompts_within_the_context(
    candidates: list[Task], budget: CatalogueBudget, chat_tokenizer: Any, served: ServedModel
) -> None:
    registry = admitted(budget, candidates)
    assert any(task in registry.values() for task in candidates) or not candidates
    assert_prompts_fit(registry, budget, chat_tokenizer, served.context_tokens)


task_texts = st.sampled_from(list(ALPHABETS.values()) + ["Book a meeting with the customer "]).flatmap(
    lambda alphabet: st.integers(1, MAX_DESCRIPTION_CHARS).map(lambda length: text(alphabet, length))
)
registries = st.lists(
    st.builds(
        lambda index, description, examples: Task(f"task_{index:03d}", description, tuple(e[:MAX_EXAMPLE_CHARS] for e in examples)),
        st.integers(0, 999), task_texts, st.lists(task_texts, max_size=4),
    ),
    max_size=30, unique_by=lambda task: task.name,
)  # fmt: skip


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tasks=registries)
def test_any_registry_prompts_within_the_context_as_admitted_or_as_the_router_fits_it(
    tasks: list[Task], budget: CatalogueBudget, chat_tokenizer: Any, served: ServedModel
) -> None:
    registry = {task.name: task for task in tasks}
    fitted = fit_catalogue(registry, budget)  # as it is when the budget admits it, cut otherwise
    if fitted.cut is not None and fitted.cut.endswith("still over"):
        return  # names alone over the budget: not a registry of 30 tasks
    assert budget.size(fitted.tasks.values()) <= budget.limit
    assert_prompts_fit(fitted.tasks, budget, chat_tokenizer, served.context_tokens, [LONGEST[0], MOST_MESSAGES])


def test_make_local_s_settings_are_the_model_s(served: ServedModel) -> None:
    assert json.loads((served.tokenizer_file.parent / "served.json").read_text())["context_tokens"] == 8192
    assert served.environment() == {
        "TASKROUTER_SERVING_MAX_TOKENS": "8192", "TASKROUTER_SERVING_TOKENIZER": str(served.tokenizer_file)
    }  # fmt: skip


def test_a_model_that_cannot_be_read_is_said_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"nothing: no such file or folder"):
        served_model(tmp_path / "nothing", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("TASKROUTER_LOCAL_MODEL", str(tmp_path / "empty"))
    monkeypatch.setenv("TASKROUTER_LOCAL_DIR", str(tmp_path / "state"))
    for name in ("TASKROUTER_SERVING_MAX_TOKENS", "TASKROUTER_SERVING_TOKENIZER"):
        monkeypatch.setenv(name, "")  # what the command would set is put back after the test
    assert cli_main(["--base-url", "http://127.0.0.1:9", "tasks", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"taskrouter: TASKROUTER_LOCAL_MODEL: {tmp_path / 'empty'}") and "config.json" in err
    assert err.count("\n") == 1  # one line, no traceback
