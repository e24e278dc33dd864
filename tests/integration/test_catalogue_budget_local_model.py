"""The catalogue budget follows the model `make local` serves: SmolLM2-135M-Instruct (the GGUF set-up
installs), whose context is 8,192 tokens where a stage serves 32,768.

Over real HTTP: the registry counts the catalogue in the model's tokens and refuses, in those tokens,
the write that would take a prompt past the model's context (text that tokenizes poorly: Hangul, ~1
token a byte); every registry it accepted on the way prompts within the context, counted as the model
server counts a prompt (its chat template, then its tokenizer); `tasks import` run with the same
TASKROUTER_LOCAL_MODEL checks a file in the same tokens before its first write. Lean: one container,
no capture, no adapter, and no decision asked of the model (a CPU takes seconds a prompt)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from taskrouter.cli import main
from taskrouter.core.prompting import TEMPLATE_TOKENS, RoutingPrompt, build_prompt
from taskrouter.core.request import MAX_CONTENT_CHARS, MAX_MESSAGES, Message, Strategy
from taskrouter.core.tasks import Task
from taskrouter.model_server.bundled import smollm2_gguf
from taskrouter.model_server.engine import Engine
from taskrouter.model_server.loading import pretrained_source

from .local_mode import LocalServer

CONTEXT = 8192  # SmolLM2-135M's (its GGUF's llama.context_length)
START_TIMEOUT_S = 600  # the model loads in seconds alone, minutes on a busy machine
HANGUL = "다람쥐헌쳇바퀴에타고파"
TOKENS_REFUSAL = re.compile(r"catalogue (\d+) tokens of (\d+), (\d+) left")


def hangul(length: int) -> str:
    return (HANGUL * (length // len(HANGUL) + 1))[:length]


def wide(index: int) -> dict[str, Any]:
    """A task of ~1,550 bytes as rendered (well inside a stage's byte budget) and ~1,500 tokens."""
    return {"description": f"{index} " + hangul(200), "examples": [hangul(100) for _ in range(3)]}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-model-budget")


@pytest.fixture(scope="module")
def local(state: Path) -> Iterator[LocalServer]:
    server = LocalServer(
        state, start_timeout_s=START_TIMEOUT_S, TASKROUTER_LOCAL_MODEL=str(smollm2_gguf()),
        TASKROUTER_LOCAL_CONTAINERS="1", TASKROUTER_CAPTURE_SHARE="0", TASKROUTER_REGISTRY_TTL_S="0",
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chat_tokenizer() -> Any:
    """The model server's tokenizer (loading.load's call), its chat template with it."""
    from transformers import AutoTokenizer

    source, keywords = pretrained_source(smollm2_gguf())
    return AutoTokenizer.from_pretrained(source, local_files_only=True, **keywords)


def prompt_tokens(chat_tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """As the model server counts a prompt before it refuses one past its context (`Engine.prompt_ids`)."""
    return len(Engine.prompt_ids(SimpleNamespace(loaded=SimpleNamespace(tokenizer=chat_tokenizer)), messages))


def registry(local: LocalServer) -> dict[str, Task]:
    status, body = local.request("GET", "/tasks")
    assert status == 200, body
    return {t["name"]: Task(t["name"], t["description"], tuple(t["examples"])) for t in body["tasks"]}


def test_the_banner_gives_the_budget_in_the_model_s_tokens(local: LocalServer) -> None:
    assert re.search(r"budget: +[\d,]+ tokens of task catalogue \(the 8,192-token context of the model served", local.banner)
    assert "prompts show at most 17 messages, 1,365 bytes of them" in local.banner


def test_a_write_past_the_model_s_context_is_refused_in_its_tokens(local: LocalServer, chat_tokenizer: Any) -> None:
    accepted = []
    for index in range(12):  # a stage's 18,977 bytes would take all twelve: ~18,000 tokens
        status, body = local.request("PUT", f"/tasks/wide_task_{index:02d}", wide(index))
        if status != 201:
            break
        accepted.append(registry(local))
    # Every registry the API accepted: its longest system message alone, with the chat template and the
    # largest answer cap, fits the model's context.
    conversation = [Message(role="user", content="x")]
    for tasks in accepted:
        for strategy in Strategy:
            prompt = build_prompt(strategy, conversation, tasks, None)
            system = max(prompt_tokens(chat_tokenizer, [m]) for m in (prompt.messages()[0], prompt.json_messages()[0]))
            assert system + TEMPLATE_TOKENS + RoutingPrompt.largest_answer_tokens() <= CONTEXT, (len(tasks), strategy, system)

    assert status == 422 and body["error"]["code"] == "catalogue_too_large", body
    size, budget, left = map(int, TOKENS_REFUSAL.fullmatch(body["error"]["message"]).groups())
    assert size > budget and left < size - (budget - left)
    assert f"wide_task_{index:02d}" not in registry(local)

    # ... and with the transcript the router shows for this context, the longest conversations too
    from taskrouter.core.prompting import transcript_bound

    largest = accepted[-1] if accepted else registry(local)
    for content in ("0123456789", HANGUL, '&"<>'):  # a token a byte, ~1 a byte, escapes
        longest = [Message(role=("user", "assistant")[i % 2], content=(content * 400)[:MAX_CONTENT_CHARS])
                   for i in range(MAX_MESSAGES - 1, -1, -1)]  # fmt: skip
        for strategy in Strategy:
            prompt = build_prompt(strategy, longest, largest, max(largest, key=len), transcript_bound(CONTEXT))
            for messages in (prompt.messages(), prompt.json_messages()):
                assert prompt_tokens(chat_tokenizer, messages) + RoutingPrompt.largest_answer_tokens() <= CONTEXT


def test_import_checks_a_file_in_the_model_s_tokens_before_its_first_write(
    local: LocalServer, state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = registry(local)
    file = tmp_path / "tasks.json"
    file.write_text(json.dumps({"tasks": [{"name": f"imported_{index:02d}", **wide(index)} for index in range(6)]}))
    monkeypatch.setenv("TASKROUTER_LOCAL_MODEL", str(smollm2_gguf()))  # as for make local
    monkeypatch.setenv("TASKROUTER_LOCAL_DIR", str(state))  # make local's: the model's facts are read already
    for name in ("TASKROUTER_SERVING_MAX_TOKENS", "TASKROUTER_SERVING_TOKENIZER"):
        monkeypatch.setenv(name, "")  # the command sets them; put back as they were after the test
    code = main(["--base-url", local.url, "tasks", "import", str(file)])
    err = capsys.readouterr().err
    assert code == 1 and TOKENS_REFUSAL.search(err) and "nothing imported" in err, err
    assert registry(local) == before
