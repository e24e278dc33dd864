"""Each generated token's logprob, and the likeliest tokens', as vLLM 0.12 computes them for a greedy
request under a grammar (the vllm-0.12.0 wheel; protocol.py turns them into the answer's JSON).

- What is scored: with the default `logprobs_mode` `raw_logprobs` (vllm/config/model.py:216), the
  sampler takes `log_softmax(logits, dim=-1, dtype=float32)` before any processor of its own
  (vllm/v1/sample/sampler.py:61-98), and the logits it is handed already carry the grammar's bitmask,
  applied in place with -inf for every token the grammar forbids (vllm/v1/worker/gpu_model_runner.py:
  3075-3114, vllm/v1/structured_output/utils.py:126; xgrammar's kernels write -inf). So a logprob is
  renormalised over the tokens the grammar allows at that step, and a token allowed alone scores 0.
  Temperature never enters for a greedy request (sampler.py:165-172).
- Which tokens: the sampled one first, then the top k of the same logprobs (sampler.py:244-246); the
  per-token dict of vllm/logprobs.py:175-206 is keyed by token, so the sampled token, when it is among
  the top k, keeps its first place and is not listed twice; the answer keeps the first k entries
  (vllm/entrypoints/openai/serving_chat.py:1644-1645). Under greedy decoding that is the top k.
- Every generated token has its entry, the stop token that ended the answer included
  (v1/core/sched/scheduler.py:1233-1251, v1/engine/detokenizer.py:106-125, serving_chat.py:1664).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token's logprob and the `top` most likely tokens' (token, logprob), in vLLM's
    order: the generated token first."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def scored(logits: torch.Tensor, token: int, top: int) -> TokenLogprobs:
    """`token`'s entry from one step's logits (a row of the vocabulary's width, the grammar's mask
    applied) and its `top` likeliest tokens (0: none)."""
    logprobs = logits.log_softmax(dim=-1, dtype=torch.float32)
    chosen = float(logprobs[token])
    listed: list[tuple[int, float]] = []
    if top > 0:
        values, ids = torch.topk(logprobs, top)
        listed = [(token, chosen)]
        listed += [(int(i), float(v)) for i, v in zip(ids, values) if int(i) != token]
    return TokenLogprobs(token, chosen, tuple(listed[:top]))


def forced(token: int, top: int, vocab_size: int) -> TokenLogprobs:
    """The entry of a token the grammar allowed alone, scored with no forward pass: the masked
    logits are -inf but for it, whatever the model's, so its logprob is 0 and the others' -inf."""
    logits = torch.full((vocab_size,), float("-inf"))
    logits[token] = 0.0
    return scored(logits, token, top)
