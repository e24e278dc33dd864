"""The model server's engine on a tiny random Llama built here (a model folder, no hub): greedy
decoding under the router's grammars, the answer cap, and a prefix cache that changes no answer and
whose cached tensors no request writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskrouter.core.prompting import build_prompt
from taskrouter.core.request import Message, Strategy
from taskrouter.core.task_spec import load_task_file
from tests.training.tiny_base import TASKS_FILE, build_tiny_base

torch = pytest.importorskip("torch")  # the local-model extra; `make test` installs it
pytest.importorskip("xgrammar")

from taskrouter.model_server.constraints import Grammars  # noqa: E402
from taskrouter.model_server.engine import Engine  # noqa: E402
from taskrouter.model_server.kv_cache import new_cache  # noqa: E402
from taskrouter.model_server.loading import load  # noqa: E402

TASKS = {task.name: task for task in load_task_file(TASKS_FILE, updated_at="")}
CONVERSATION = [Message(role="user", content="Can you write up the minutes of my call with Acme?")]


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, Engine, Grammars]:
    loaded = load(build_tiny_base(tmp_path_factory.mktemp("tiny")), {})
    cached = Engine(loaded)
    return cached, Engine(loaded, prefix_cache=False), Grammars(loaded.tokenizer, loaded.vocab_size, cached.stop_ids)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_answers_are_allowed_ones_and_the_prefix_cache_changes_none(engines, strategy: Strategy) -> None:
    cached, uncached, grammars = engines
    prompt = build_prompt(strategy, CONVERSATION, TASKS, None)
    grammar = grammars.compile(prompt.output_constraint())

    answers = [engine.complete(prompt.messages(), grammar=grammar, max_tokens=prompt.max_answer_tokens)
               for engine in (cached, uncached, cached)]  # the last one from the filled cache

    assert answers[2].cached_tokens > 0 and answers[1].cached_tokens == 0
    assert len({(a.prompt_ids, a.token_ids) for a in answers}) == 1
    assert answers[0].finish_reason == "stop" and prompt.parse(answers[0].text) in (*TASKS, None)


def test_the_cached_prefix_is_never_written(engines) -> None:
    cached, _, grammars = engines
    prompt = build_prompt(Strategy.REACT, CONVERSATION, TASKS, None)
    cached.complete(prompt.messages(), max_tokens=1)
    prefix = cached.prefixes.get((None, prompt.messages()[0]["content"]))  # (adapter, system text)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in prefix.cache.layers]

    for other in ("Send Dana a follow-up", "Thanks, that is all"):
        longer = build_prompt(Strategy.REACT, [Message(role="user", content=other * 20)], TASKS, None)
        cached.complete(longer.messages(), grammar=grammars.compile(longer.output_constraint()), max_tokens=64)

    assert all(torch.equal(k, layer.keys) and torch.equal(v, layer.values)
               for (k, v), layer in zip(before, prefix.cache.layers))


def test_the_answer_stops_at_its_cap(engines) -> None:
    cached, _, _ = engines

    answer = cached.complete([{"role": "user", "content": "hello"}], max_tokens=3)

    assert answer.finish_reason in ("length", "stop") and len(answer.token_ids) <= 3
    assert answer.finish_reason == "stop" or len(answer.token_ids) == 3


def test_appending_in_place_computes_what_concatenating_does(engines) -> None:
    loaded = engines[0].loaded
    ids = loaded.tokenizer("Write up the minutes of my call", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        caches = [new_cache(loaded.base_config), None]  # None: transformers' own DynamicCache
        steps = [[], []]
        for which in (0, 1):
            out = loaded.model(input_ids=torch.tensor([ids]), past_key_values=caches[which], use_cache=True)
            for token in (5, 6, 7, 8):
                steps[which].append(out.logits[0, -1])
                out = loaded.model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*steps))
