"""The model server's logprobs on the tiny random Llama (no hub), over real HTTP, held to a direct
computation (logprobs_reference.py: the model loaded on its own, one pass, the constraint's mask, a
log-softmax): every entry, the stop token's included; where the constraint's complete match allows
several stop tokens (a model with two), the stop is chosen and scored as vLLM does (the likeliest of
them, renormalised), which takes a forward pass; logprobs change no answer and cost nothing unasked;
the cap on `top_logprobs` is checked with the model's vocabulary. tests/integration/
test_model_server_logprobs.py does the same with SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # the local-model extra; `make test` installs it
xgrammar = pytest.importorskip("xgrammar")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from taskrouter.model_server.constraints import choice_grammar  # noqa: E402
from taskrouter.model_server.limits import Limits  # noqa: E402
from taskrouter.model_server.loading import load  # noqa: E402
from tests.training.tiny_base import build_tiny_base  # noqa: E402

from .logprobs_reference import assert_matches, reference_logprobs  # noqa: E402
from .model_server_harness import chat, serving  # noqa: E402

CHOICES = ["recap", "recap_email", "none"]  # names that are prefixes of one another: a stop can be a choice
TOP = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_base(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def two_stops(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with two stop tokens (its config lists <|im_end|> and <|endoftext|>), their rows of
    the output layer swapped: where the random model preferred the tokenizer's own end (<|im_end|>),
    it now prefers the other."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    first, second = tokenizer.eos_token_id, tokenizer.pad_token_id
    with torch.no_grad():
        weights = model.lm_head.weight
        weights[[first, second]] = weights[[second, first]].clone()
    model.config.eos_token_id = [first, second]
    out = tmp_path_factory.mktemp("two-stops")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _reference(folder: Path):
    """The model and tokenizer of `folder`, loaded here with transformers alone."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    return tokenizer, model


def _asked(content: str, choices: list[str] = CHOICES, **fields) -> dict:
    return chat(content, max_tokens=16, structured_outputs={"choice": choices}, return_token_ids=True, **fields)


def _check(answer: dict, folder: Path, stops: list[int], choices: list[str] = CHOICES) -> dict:
    """Holds every logprob of `answer` to the reference computation on the model of `folder`, under the
    choice as vLLM writes it (`root ::= "a" | "b"`) compiled by xgrammar with `stops` as its ends; the
    answer's choice."""
    tokenizer, model = _reference(folder)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["token_ids"][-1] in stops
    vocab = model.config.vocab_size
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=stops)
    grammar = xgrammar.GrammarCompiler(info).compile_grammar("root ::= " + " | ".join(f'"{c}"' for c in choices))
    expected = reference_logprobs(model, answer["prompt_token_ids"], choice["token_ids"], grammar, vocab)
    assert_matches(choice["logprobs"]["content"], choice["token_ids"], expected, lambda t: tokenizer.decode([t]), TOP)
    assert len(choice["logprobs"]["content"]) == answer["usage"]["completion_tokens"]
    return choice


@pytest.mark.parametrize(("content", "answer"), [("Recap the meeting for me", "recap"), ("hi", "recap_email")])
def test_each_token_s_logprob_is_the_masked_log_softmax_of_a_direct_pass(folder: Path, content: str,
                                                                         answer: str) -> None:
    """After `recap` the stop is a real choice (`recap_email` goes on); after `recap_email` nothing else
    is allowed: the server appends the stop with no forward pass, its logprob exactly 0."""
    loaded = load(folder, {})
    with serving(loaded, Limits(deadline_s=120)) as served:
        status, answered = served.post(_asked(content, logprobs=True, top_logprobs=TOP))
    assert status == 200, answered
    choice = _check(answered, folder, [loaded.tokenizer.eos_token_id])
    assert choice["message"]["content"] == answer  # the random model's, as built (a seed)
    stop = choice["logprobs"]["content"][-1]["logprob"]
    assert stop == 0.0 if answer == "recap_email" else stop < -1e-3


def test_where_several_stops_are_allowed_the_likeliest_is_chosen_and_scored(two_stops: Path) -> None:
    """A complete match of `recap_email` or `none` allows either stop token: vLLM takes the likelier,
    scored over the two, which takes a forward pass. The server used to append the tokenizer's own end
    (<|im_end|>) with none, whatever the model preferred."""
    loaded = load(two_stops, {})
    tokenizer = loaded.tokenizer
    stops = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    choices = ["recap_email", "none"]
    with serving(loaded, Limits(deadline_s=120)) as served:
        assert served.engine.stop_ids == frozenset(stops)
        unasked = served.post(_asked("Recap the meeting for me", choices))[1]["choices"][0]
        status, answer = served.post(_asked("Recap the meeting for me", choices, logprobs=True, top_logprobs=TOP))
    assert unasked["token_ids"][-1] == tokenizer.pad_token_id  # the same stop whether logprobs are asked or not
    assert status == 200, answer
    choice = _check(answer, two_stops, stops, choices)  # the stop's entry held to the reference with the rest
    assert choice["token_ids"][-1] == tokenizer.pad_token_id  # <|endoftext|>: the model's, not the first stop
    stop = choice["logprobs"]["content"][-1]
    assert -9999.0 < stop["logprob"] < 0.0 and stop["token"] == "<|endoftext|>"


def test_logprobs_change_no_answer_and_are_null_unasked(folder: Path) -> None:
    loaded = load(folder, {})
    with serving(loaded, Limits(deadline_s=120)) as served:
        answers = [served.post(_asked("Recap the meeting for me", **fields))[1]
                   for fields in ({}, {"logprobs": True}, {"logprobs": False, "top_logprobs": 0},
                                  {"logprobs": True, "top_logprobs": None})]  # fmt: skip
    choices = [answer["choices"][0] for answer in answers]
    assert len({(c["message"]["content"], tuple(c["token_ids"])) for c in choices}) == 1
    assert [c["logprobs"] is None for c in choices] == [True, False, True, True]  # null top_logprobs: none, as vLLM
    content = choices[1]["logprobs"]["content"]
    assert len(content) == len(choices[1]["token_ids"]) and all(entry["top_logprobs"] == [] for entry in content)


@pytest.mark.parametrize(("top_logprobs", "asked"), [(21, 21), (-1, "the vocabulary")])
def test_more_than_twenty_alternatives_is_the_containers_500(folder: Path, top_logprobs: int, asked) -> None:
    loaded = load(folder, {})
    asked = loaded.vocab_size if asked == "the vocabulary" else asked
    with serving(loaded, Limits(deadline_s=120)) as served:
        status, answer = served.post(_asked("Recap the meeting for me", logprobs=True, top_logprobs=top_logprobs))
    assert status == 424 and answer["ErrorCode"] == "ModelError" and answer["OriginalStatusCode"] == 500
    assert f"Requested sample logprobs of {asked}, which is greater than max allowed: 20" in answer["OriginalMessage"]


def test_the_choice_grammar_is_the_one_the_reference_compiles() -> None:
    assert choice_grammar(CHOICES) == 'root ::= "recap" | "recap_email" | "none"'
