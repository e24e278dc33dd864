"""The model server's logprobs with the real SmolLM2-135M-Instruct (the GGUF set-up installs), held to a
direct computation with transformers on the same tokens, to 1e-4 (tests/unit/logprobs_reference.py: the
model loaded on its own, one pass over the prompt and the answer, the constraint's mask at each answer
position, a log-softmax; vLLM 0.12's `raw_logprobs`, model_server/logprobs.py cites where): every entry,
the stop token's included, for a choice whose names are prefixes of one another (`recap`, `recap_email`:
after `recap` the stop is a real choice) and for the few-shot CoT regex with its reasoning line. The
router's SageMaker backend then reads the same confidence from the server and from the endpoint's test
double answering the same tokens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

torch = pytest.importorskip("torch")  # the local-model extra; `make test` installs it
xgrammar = pytest.importorskip("xgrammar")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from taskrouter.adapters.sagemaker_backend import SageMakerBackend  # noqa: E402
from taskrouter.core.confidence import answer_confidence, logprobs_of  # noqa: E402
from taskrouter.core.prompting import RoutingPrompt, build_prompt  # noqa: E402
from taskrouter.core.request import Message, Strategy  # noqa: E402
from taskrouter.core.tasks import Task  # noqa: E402
from taskrouter.model_server.bundled import smollm2_gguf  # noqa: E402
from taskrouter.model_server.limits import Limits  # noqa: E402
from taskrouter.model_server.loading import load  # noqa: E402
from tests.unit.logprobs_reference import assert_matches, reference_logprobs  # noqa: E402
from tests.unit.model_server_harness import ENDPOINT, Served, serving  # noqa: E402

from .servers import SageMakerRuntimeDouble  # noqa: E402

TASKS = {
    "recap": Task("recap", "Write a short recap of a meeting.", ("Recap the meeting for me",)),
    "recap_email": Task("recap_email", "E-mail a recap of a meeting to its attendees.",
                        ("Send the attendees a recap",)),
}
COT_TURN = [Message(role="user", content="Recap this morning's meeting for me please.")]
DEADLINE_S = 600  # a busy CPU takes seconds a token; the answer is what is tested here, not its time
TOP = 3


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serving(load(smollm2_gguf(), {}), Limits(deadline_s=DEADLINE_S)) as server:
        yield server


@pytest.fixture(scope="module")
def reference() -> tuple[Any, Any, xgrammar.GrammarCompiler]:
    """SmolLM2 loaded here by transformers alone, and an xgrammar compiler for its tokenizer whose stop is
    the end of its turn (<|im_end|>, its eos)."""
    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                                 dtype=torch.float32).eval()
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=model.config.vocab_size,
                                                   stop_token_ids=[tokenizer.eos_token_id])
    return tokenizer, model, xgrammar.GrammarCompiler(info)


def _answer(served: Served, messages: list[dict[str, str]], constraint: dict[str, Any], max_tokens: int) -> dict:
    body = {"messages": messages, "max_completion_tokens": max_tokens, "temperature": 0.0, "logprobs": True,
            "top_logprobs": TOP, "return_token_ids": True, "structured_outputs": constraint}
    status, answer = served.post(body, timeout_s=DEADLINE_S)
    assert status == 200, answer
    return answer


def _check(answer: dict, messages: list[dict[str, str]], reference, grammar: xgrammar.CompiledGrammar) -> dict:
    tokenizer, model, _ = reference
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert answer["prompt_token_ids"] == prompt_ids  # the same tokens, counted here
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["token_ids"][-1] == tokenizer.eos_token_id
    expected = reference_logprobs(model, prompt_ids, choice["token_ids"], grammar, model.config.vocab_size)
    assert_matches(choice["logprobs"]["content"], choice["token_ids"], expected, lambda t: tokenizer.decode([t]), TOP)
    assert choice["logprobs"]["content"][-1]["token"] == "<|im_end|>"
    assert len(choice["logprobs"]["content"]) == answer["usage"]["completion_tokens"]
    return choice


def test_a_choice_whose_stop_is_a_real_choice(served: Served, reference) -> None:
    messages = [{"role": "user", "content": "Say the word recap."}]
    choices = ["recap", "recap_email", "none"]

    answer = _answer(served, messages, {"choice": choices}, 16)

    grammar = reference[2].compile_grammar('root ::= "recap" | "recap_email" | "none"')  # vLLM's choice_as_grammar
    choice = _check(answer, messages, reference, grammar)
    assert choice["message"]["content"] == "recap"  # SmolLM2's greedy answer
    stop = choice["logprobs"]["content"][-1]
    assert stop["logprob"] < -1e-3  # a real choice: `recap_email` went on with "_"
    assert "_" in [entry["token"] for entry in stop["top_logprobs"]]


@pytest.fixture(scope="module")
def cot() -> RoutingPrompt:
    return build_prompt(Strategy.FEW_SHOT_COT, COT_TURN, TASKS, None)


@pytest.fixture(scope="module")
def cot_answer(served: Served, cot: RoutingPrompt) -> dict:
    return _answer(served, cot.messages(), cot.output_constraint(), cot.max_answer_tokens)


def test_a_regex_with_a_reasoning_line(cot_answer: dict, cot: RoutingPrompt, reference) -> None:
    choice = _check(cot_answer, cot.messages(), reference, reference[2].compile_regex(cot.output_constraint()["regex"]))

    assert "\nAnswer: " in choice["message"]["content"] and len(choice["token_ids"]) > 8  # a reasoning line first


def test_the_router_reads_the_same_confidence_from_the_server_and_the_double(served: Served, cot: RoutingPrompt,
                                                                           cot_answer: dict) -> None:
    """The router's request asks for the generated tokens' logprobs alone; the double answers the tokens
    the server generated for it. Both read as the same answer with the same confidence: the final
    answer's tokens and the stop's, the reasoning's left out."""
    raw = cot_answer["choices"][0]
    text = raw["message"]["content"]
    double = SageMakerRuntimeDouble()
    try:
        tokens = [(entry["token"], entry["logprob"]) for entry in raw["logprobs"]["content"]]
        double.always(double.answer(text, logprobs=tokens))
        answers = [SageMakerBackend({float(DEADLINE_S): client}, ENDPOINT, None).decide(cot, float(DEADLINE_S))
                   for client in (served.runtime(DEADLINE_S), _runtime(double.url))]  # fmt: skip
        assert double.requests[-1].json()["logprobs"] is True
    finally:
        double.close()

    expected = answer_confidence(text, cot.answer_start(text), logprobs_of(raw))
    assert answers[0].task == answers[1].task == cot.parse(text)
    assert answers[1].confidence == expected and 0 < expected <= 1  # the double: exactly the tokens it was given
    assert answers[0].confidence == pytest.approx(expected, rel=1e-6)  # the server, decoding the same again


def _runtime(url: str) -> Any:
    session = boto3.session.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1")
    return session.client("sagemaker-runtime", endpoint_url=url, config=Config(retries={"total_max_attempts": 1}))
