"""Greedy decoding of one chat request, under its grammar, with the system message's keys and values
cached.

The prompt is the chat template rendered as text with the assistant's turn opened, then tokenized
with no special tokens added: what vLLM does for a chat request (its `add_special_tokens` is false for
chat) and what `taskrouter adapter train` does for a turn, so a trained adapter sees at serving the
ids it was trained on.

Prefix cache: vLLM (LMI's engine) keeps the KV blocks of every prompt prefix it has seen, keyed by the
tokens and the LoRA adapter, so the router's system message, the same for every request over one task
list, is prefilled once. Here the KV of the tokens up to the end of the system message is kept per
(adapter, system text) and each request decodes on a copy of it (kv_cache.py: the copy is made by the
request's first write, never into the cached tensors), within a bound on the cache's memory.

Limits (limits.py): one decode at a time, requests waiting their turn in a bounded line; each request
stops before its next forward pass once its client is gone or its deadline has passed.

A grammar's dead end (no token allowed, not even a stop) is never a complete match: the request fails
(`DeadEnd`) rather than being answered as `stop` with text outside the constraint.

Logprobs, when a request asks for them, are vLLM 0.12's default `raw_logprobs` (logprobs.py says where
each rule comes from): the log-softmax of the logits after the grammar's mask, one entry per generated
token, the stop token's included.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import numpy
import torch
import xgrammar

from taskrouter.model_server.kv_cache import PrefixCache, fork, new_cache
from taskrouter.model_server.limits import UNWATCHED, Limits, Turns, Watch
from taskrouter.model_server.loading import LoadedModel
from taskrouter.model_server.logprobs import TokenLogprobs, forced, scored


class ContextTooLong(ValueError):
    """The prompt and the answer's cap do not fit the model's context."""


class PromptError(ValueError):
    """The messages do not render or tokenize (a template error; text the tokenizer cannot take, such
    as a lone surrogate)."""


class DeadEnd(RuntimeError):
    """The grammar allows no token at all, not even a stop: an incomplete match that cannot go on."""


@dataclass(frozen=True)
class Completion:
    prompt_ids: tuple[int, ...]  # every token the model was fed for the prompt, cached ones included
    cached_tokens: int  # how many of them came from the prefix cache
    token_ids: tuple[int, ...]  # the answer's tokens, the stop token last when one ended it
    text: str
    finish_reason: str  # "stop" (a stop token) or "length" (the cap)
    seconds: float
    logprobs: tuple[TokenLogprobs, ...] | None = None  # one per token of token_ids, when asked


class Engine:
    """One model, one request at a time (a CPU has no room for a batch worth having)."""

    def __init__(self, loaded: LoadedModel, *, prefix_cache: bool = True, limits: Limits = Limits()) -> None:
        self.loaded = loaded
        self.prefix_cache = prefix_cache
        self.limits = limits
        tokenizer = loaded.tokenizer
        generation = getattr(loaded.base_config, "eos_token_id", None)
        stops = {tokenizer.eos_token_id, *(generation if isinstance(generation, list) else [generation])}
        self.stop_ids = frozenset(int(token) for token in stops if token is not None)
        self.turns = Turns(limits.queue)
        self.prefixes = PrefixCache(limits.prefix_cache_bytes)
        self._lone_stops = {stop: _bitmask_of(stop, loaded.vocab_size) for stop in self.stop_ids}

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt's tokens; PromptError where vLLM's chat preprocessing fails (it catches these
        exceptions of the template and the tokenizer and answers 400: serving_chat.py,
        `create_chat_completion`)."""
        tokenizer = self.loaded.tokenizer
        try:
            text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])
        except (ValueError, TypeError, RuntimeError, jinja2.TemplateError) as error:
            raise PromptError(f"{error} {error.__cause__}") from None

    def complete(
        self,
        messages: Sequence[dict[str, str]],
        *,
        adapter: str | None = None,
        grammar: xgrammar.CompiledGrammar | None = None,
        max_tokens: int | None = None,
        logprobs: int | None = None,
        watch: Watch = UNWATCHED,
    ) -> Completion:
        """`logprobs`: None for none, else each token's logprob and the `logprobs` most likely tokens'
        (vLLM's SamplingParams.logprobs). Raises what `Turns.turn` and `watch.check` raise (limits.py),
        ContextTooLong, PromptError and DeadEnd."""
        started = time.perf_counter()
        ids = self.prompt_ids(messages)
        room = self.loaded.max_model_len - len(ids)
        if room < max(1, max_tokens or 1):
            raise ContextTooLong(
                f"This model's maximum context length is {self.loaded.max_model_len} tokens. However, you requested "
                f"{len(ids) + (max_tokens or 1)} tokens ({len(ids)} in the messages, {max_tokens or 1} in the completion)."
            )
        cap = room if max_tokens is None else max_tokens  # vLLM's default: the rest of the context
        with self.turns.turn(watch), torch.inference_mode(), self.loaded.serving(adapter):
            watch.check()
            cached, cache = self._cached_prefix(adapter, messages, ids)
            answer, finish, scores = self._decode(ids[cached:], cache, grammar, cap, logprobs, watch)
        text = self.loaded.tokenizer.decode(answer, skip_special_tokens=True)  # vLLM's default
        return Completion(tuple(ids), cached, tuple(answer), text, finish, time.perf_counter() - started,
                          None if logprobs is None else tuple(scores))

    # -- decoding --------------------------------------------------------------------------------------
    def _decode(
        self, pending: list[int], cache: Any, grammar: xgrammar.CompiledGrammar | None, cap: int,
        top: int | None, watch: Watch,
    ) -> tuple[list[int], str, list[TokenLogprobs]]:
        """The answer's tokens, why it ended, and each token's logprobs when `top` is not None."""
        matcher = xgrammar.GrammarMatcher(grammar) if grammar is not None else None
        bitmask = xgrammar.allocate_token_bitmask(1, self.loaded.vocab_size) if matcher else None
        answer: list[int] = []
        scores: list[TokenLogprobs] = []
        while len(answer) < cap:
            if matcher is not None:
                matcher.fill_next_token_bitmask(bitmask)
                if not bool(torch.any(bitmask)):
                    raise DeadEnd(f"the output constraint allows no token after {len(answer)} tokens of its "
                                  "answer: it can never be completed from there")
                stop = self._lone_stop(bitmask)
                if stop is not None:  # a complete match that allows one stop alone: no forward pass needed
                    answer.append(stop)
                    if top is not None:
                        scores.append(forced(stop, top, self.loaded.vocab_size))
                    return answer, "stop", scores
            watch.check(len(answer))  # between tokens: a gone client or a passed deadline ends it here
            logits, cache = self._forward(pending, cache)
            if matcher is not None:
                xgrammar.apply_token_bitmask_inplace(logits, bitmask)
            token = int(torch.argmax(logits, dim=-1))
            answer.append(token)
            if top is not None:  # only when asked: a log-softmax over the vocabulary a token
                scores.append(scored(logits[0], token, top))
            if token in self.stop_ids:
                return answer, "stop", scores
            if matcher is not None and not matcher.accept_token(token):
                raise RuntimeError(f"the grammar refused token {token} that its own mask allowed")
            pending = [token]
        return answer, "length", scores

    def _forward(self, ids: list[int], cache: Any) -> tuple[torch.Tensor, Any]:
        """The next token's logits (float32, shape (1, vocab)) after `ids`, and the grown cache; the
        output layer runs on the last position only."""
        output = self.loaded.model(
            input_ids=torch.tensor([ids]),
            past_key_values=new_cache(self.loaded.base_config) if cache is None else cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return output.logits[:, -1, :].float(), output.past_key_values

    def _lone_stop(self, bitmask: torch.Tensor) -> int | None:
        """The stop token the mask allows alone, if it allows one token only and that is a stop: then
        it is the answer's last token whatever the logits, and its logprob 0. Where the mask allows
        several stops (a model with several), vLLM takes the likeliest of them: a forward pass."""
        return next((stop for stop, alone in self._lone_stops.items() if torch.equal(bitmask, alone)), None)

    # -- prefix cache ----------------------------------------------------------------------------------
    def _cached_prefix(self, adapter: str | None, messages: Sequence[dict[str, str]], ids: list[int]) -> tuple[int, Any]:
        """How many leading tokens of `ids` a cache holds, and a copy of that cache (0, None: none)."""
        if not self.prefix_cache or not messages or messages[0].get("role") != "system":
            return 0, None
        key = (adapter, messages[0]["content"])
        prefix = self.prefixes.get(key)
        if prefix is None:
            prefix_ids = self._system_ids(messages[0])
            if prefix_ids is None:
                return 0, None
            _, cache = self._forward(list(prefix_ids), new_cache(self.loaded.base_config, exact=True))
            prefix = self.prefixes.put(key, prefix_ids, cache)
        # The cache serves only a prompt that begins with exactly its tokens, and leaves one to feed.
        if len(prefix.ids) >= len(ids) or tuple(ids[: len(prefix.ids)]) != prefix.ids:
            return 0, None
        return len(prefix.ids), fork(prefix.cache)

    def _system_ids(self, system: dict[str, str]) -> tuple[int, ...] | None:
        """The tokens of the system message as the template renders it at the head of a prompt; None
        for a template that cannot render it alone."""
        tokenizer = self.loaded.tokenizer
        try:
            text = tokenizer.apply_chat_template([system], add_generation_prompt=False, tokenize=False)
        except Exception:  # a template that wants a user turn
            return None
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def _bitmask_of(token: int, vocab_size: int) -> torch.Tensor:
    """xgrammar's bitmask layout (32 tokens a word, int32) with `token`'s bit alone set."""
    words = numpy.zeros(xgrammar.get_bitmask_shape(1, vocab_size), dtype=numpy.uint32)
    words[0, token // 32] = numpy.uint32(1 << (token % 32))
    return torch.from_numpy(words.view(numpy.int32))
