"""How sure the primary was of its answer, and the thresholds that escalate the doubtful ones.

The confidence of an answer is its probability under the constraint the engine decoded it with:
`exp` of the sum of its own tokens' logprobs, as the engine reports them. Only the answer's tokens
count: for the strategies that reason first (few-shot CoT, ReAct), the final answer's, never the
reasoning's (a long, sure reasoning line would otherwise read as doubt). The stop token counts where
the engine lists it: after an answer that another allowed name extends (`recap`, `recap_email`), the
stop was a real choice; after one nothing extends, the constraint allowed the stop alone and its
logprob is 0.

What the engine reports (vLLM 0.12.0, the stage's LMI 0.36.0-lmi18 engine, read at its release wheel,
commit 4fd9d6a85): with `logprobs: true`, `choices[0].logprobs.content` holds one entry per generated
token, the stop token included (`<|im_end|>`, kept in the token ids though cut from the text:
v1/engine/detokenizer.py:106-125, serving_chat.py `_create_chat_logprobs` 1648-1705); each `logprob` is
log_softmax of the logits after the constraint's bitmask (gpu_model_runner.py:3109-3114 masks in place
before the sampler, whose default `logprobs_mode` raw_logprobs computes at sampler.py:81-82): the
distribution renormalised over the tokens the constraint allows, so a forced token scores 0. Raw
logprobs come before penalties: the router sends `repetition_penalty: 1.0` and `temperature: 0`, so the
greedy pick is the argmax of the distribution reported, and the endpoint needs no setting (LMI would pass
`OPTION_LOGPROBS_MODE` through to vLLM's engine arguments: djl-serving 0.36.0-lmi18-dlc
vllm_rb_properties.py:213-228). A missing step is shown as -9999.0 (serving_chat.py:1690): no confidence.

The tokens of the answer are found from the end of the text: the answer closes the text (the
constraint ends with it), and its characters are ASCII (task names and `none`), so the tokens that
cover its last characters are exact whatever the reasoning before it holds (a token of a multi-byte
character split across tokens is shown by its replacement character, which the text does not hold).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from taskrouter.core.request import Strategy
from taskrouter.core.validation import describe


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token as the engine's `logprobs.content` lists it."""

    token: str  # its text, as the engine decoded it alone
    logprob: float


MISSING = -9999.0  # vLLM's logprob of a step it has none for (and its floor for -inf)


class NoConfidence(ValueError):
    """The engine's logprobs do not cover the answer (absent, malformed, or not the text's tokens)."""


def answer_confidence(text: str, answer_start: int, tokens: Sequence[TokenLogprob]) -> float:
    """The probability of `text[answer_start:]` (the final answer) given the tokens the engine
    generated for `text`, stop tokens possibly listed after them (their text empty, or not the
    text's: `<|im_end|>`)."""
    if any(not math.isfinite(token.logprob) or not MISSING < token.logprob <= 0 for token in tokens):
        raise NoConfidence("a logprob is missing (-9999) or not a number at most 0")
    answer = len(text) - answer_start
    if answer <= 0:
        raise NoConfidence("the answer is empty")
    last = len(tokens)
    while last > 0 and (not tokens[last - 1].token or not text.endswith(tokens[last - 1].token)):
        last -= 1  # a stop token
    total = sum(token.logprob for token in tokens[last:])
    end = len(text)  # the walk's position in the text, from its end
    for token in reversed(tokens[:last]):
        if not text.endswith(token.token, 0, end):
            raise NoConfidence("the logprobs' tokens do not spell the answer")
        total += token.logprob
        end -= len(token.token)
        if len(text) - end >= answer:
            return math.exp(total)
    raise NoConfidence("the logprobs' tokens do not cover the answer")


def logprobs_of(choice: Mapping[str, Any]) -> list[TokenLogprob]:
    """The tokens of an OpenAI chat-completion choice's `logprobs.content`; NoConfidence when absent
    or not in that shape."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        raise NoConfidence("the answer carries no logprobs")
    tokens = []
    for entry in content:
        token = entry.get("token") if isinstance(entry, dict) else None
        logprob = entry.get("logprob") if isinstance(entry, dict) else None
        if not isinstance(token, str) or isinstance(logprob, bool) or not isinstance(logprob, (int, float)):
            raise NoConfidence("a logprobs entry is not {token, logprob}")
        tokens.append(TokenLogprob(token, float(logprob)))
    return tokens


# -- thresholds ------------------------------------------------------------------------------------
SHA256_HEX = r"^[0-9a-f]{64}$"
BASE = "base"  # the base model alone, as the serving adapter's name says (core.capture.BASE_ADAPTER)


class ThresholdEntry(BaseModel):
    """One calibrated threshold, as `taskrouter eval threshold` prints it: for answers of `strategy`
    from `adapter`, calibrated over the task list of digest `tasks_sha256`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy
    adapter: Annotated[str, Field(min_length=1, max_length=63)]
    threshold: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    tasks_sha256: Annotated[str, Field(pattern=SHA256_HEX)]


_ENTRIES = TypeAdapter(list[ThresholdEntry])


class ThresholdsError(ValueError):
    """Thresholds that cannot be used; the message names the entry and the field."""


def parse_thresholds(raw: str) -> list[ThresholdEntry]:
    """A JSON list of threshold entries (the environment's form)."""
    try:
        entries = _ENTRIES.validate_json(raw)
    except ValidationError as error:
        raise ThresholdsError(describe(error)) from None
    check_unique(entries)
    return entries


def check_unique(entries: Iterable[ThresholdEntry]) -> None:
    seen: set[tuple[Strategy, str]] = set()
    for entry in entries:
        key = (entry.strategy, entry.adapter)
        if key in seen:
            raise ThresholdsError(f"two thresholds for {entry.strategy.value} answers of {entry.adapter!r}")
        seen.add(key)


def thresholds_for(entries: Iterable[ThresholdEntry], adapter: str) -> dict[Strategy, tuple[float, str]]:
    """Each strategy's (threshold, tasks digest) for answers of the serving `adapter`; the others'
    thresholds were calibrated on another model and do not apply."""
    return {entry.strategy: (entry.threshold, entry.tasks_sha256) for entry in entries if entry.adapter == adapter}
