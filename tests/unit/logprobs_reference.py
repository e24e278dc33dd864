"""The logprobs a model server's answer must carry, computed here without the server's code: one forward
pass of the model over the prompt and the answer's tokens together (no cache), the constraint's mask
at each answer position (an xgrammar matcher fed the answer's tokens), then a log-softmax, as vLLM
0.12's sampler does under its default `raw_logprobs` (model_server/logprobs.py cites where)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import xgrammar

TOLERANCE = 1e-4  # float32: the server's cached, token-by-token pass against one pass over everything
FLOOR = -9999.0  # vLLM's rendering of -inf


def reference_logprobs(model: Any, prompt_ids: Sequence[int], answer_ids: Sequence[int],
                       grammar: xgrammar.CompiledGrammar | None, vocab_size: int) -> torch.Tensor:
    """(len(answer_ids), vocabulary): at each answer position, the masked log-softmax it was chosen from."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([[*prompt_ids, *answer_ids]]), use_cache=False).logits[0].float()
    rows = logits[len(prompt_ids) - 1 : len(prompt_ids) + len(answer_ids) - 1].clone()
    if grammar is not None:
        matcher = xgrammar.GrammarMatcher(grammar)
        bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)
        for position, token in enumerate(answer_ids):
            matcher.fill_next_token_bitmask(bitmask)
            xgrammar.apply_token_bitmask_inplace(rows[position : position + 1], bitmask)
            assert matcher.accept_token(token), f"the constraint refuses the answer's token {token} at {position}"
    return rows.log_softmax(dim=-1)


def expected_top(row: torch.Tensor, token: int, k: int) -> list[tuple[int, float]]:
    """vLLM's `top_logprobs` of one position: the generated token first, then the likeliest others."""
    values, ids = torch.topk(row, k) if k else (torch.tensor([]), torch.tensor([], dtype=torch.long))
    listed = [(token, float(row[token]))] + [(int(i), float(v)) for i, v in zip(ids, values) if int(i) != token]
    return listed[:k]


def assert_matches(content: list[dict[str, Any]], answer_ids: Sequence[int], reference: torch.Tensor,
                   decode: Any, k: int) -> None:
    """Every entry of an answer's `logprobs.content`, the stop token's included, held to the reference:
    the token's text and bytes as vLLM renders them, its logprob and its alternatives' to TOLERANCE
    (an alternative the constraint forbids: shown as -9999.0, whichever forbidden token it names)."""
    assert len(content) == len(answer_ids) == reference.shape[0]
    for position, (entry, token) in enumerate(zip(content, answer_ids)):
        where = f"token {position} ({decode(token)!r})"
        assert entry.keys() == {"token", "logprob", "bytes", "top_logprobs"}, where
        _assert_entry(entry, token, float(reference[position, token]), decode, where)
        expected = expected_top(reference[position], token, k)
        assert len(entry["top_logprobs"]) == len(expected), where
        for shown, (other, logprob) in zip(entry["top_logprobs"], expected):
            if math.isinf(logprob):
                assert shown["logprob"] == FLOOR, where
            else:
                _assert_entry(shown, other, logprob, decode, where)


def _assert_entry(entry: dict[str, Any], token: int, logprob: float, decode: Any, where: str) -> None:
    text = decode(token)
    assert entry["token"] == text and entry["bytes"] == list(text.encode("utf-8", "replace")), where
    assert abs(entry["logprob"] - logprob) <= TOLERANCE, (where, entry["logprob"], logprob)
