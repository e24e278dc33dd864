"""vLLM's `structured_outputs` as xgrammar grammars: the engine vLLM itself uses by default, so an
answer is held to the same automaton token by token.

- `choice`: a grammar of exactly those strings, as vLLM writes it (`choice_as_grammar` in
  vllm/v1/structured_output/utils.py: `root ::= "a" | "b"`);
- `regex`: `compile_regex` (vLLM's xgrammar backend does the same);
- `json` (a schema), `json_object` and `grammar` (EBNF) as vLLM's xgrammar backend compiles them.

As in vLLM, a complete match allows only the end of the sequence: decoding stops there, the stop token
not shown in the text.

Two refusals vLLM does not make, each for an answer it cannot give well:
- a `choice` list over MAX_CHOICES entries or MAX_CHOICE_BYTES in all: xgrammar's compile time grows
  with the list (~0.2 s at the bound here, 142 s for 50,000 entries) and cannot be interrupted;
- a constraint that allows no output at all where xgrammar can tell, before any decoding: no token
  at its start, or none after the text it forces (`ab[^\x00-\U0010FFFF]` forces `ab`, then allows
  nothing). vLLM has no deliberate answer for such a dead end (V1 aborts the request,
  vllm-project/vllm#18783; a 500 in #53665); a dead end found while decoding is the engine's
  DeadEnd, answered as an error, never as a complete match."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy
import torch
import xgrammar

KINDS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")  # vLLM's, one at most
SUPPORTED_KINDS = ("json", "regex", "choice", "grammar", "json_object")
OPTIONS = frozenset({"disable_fallback", "disable_any_whitespace", "disable_additional_properties", "whitespace_pattern"})
MAX_CHOICES = 1024  # the router's catalogue holds far fewer tasks (core/catalogue.py's budget)
MAX_CHOICE_BYTES = 64 * 1024  # UTF-8 bytes of all the entries together
_FORCED_STEPS = 64  # characters of a constraint's forced beginning looked at for a dead end


class ConstraintError(ValueError):
    """A `structured_outputs` that vLLM would refuse, or that this server does not take."""


def choice_grammar(choices: list[str]) -> str:
    """EBNF of exactly `choices`: each an EBNF string literal, JSON's escapes being EBNF's."""
    return "root ::= " + " | ".join(json.dumps(choice, ensure_ascii=False) for choice in choices)


class Grammars:
    """Compiles constraints for one tokenizer; xgrammar's compiler caches each grammar it compiled, so
    the router's constraint (the same for a task list) is compiled once."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Iterable[int]) -> None:
        # The engine's stop tokens: a complete match allows exactly those, which end the decoding.
        self.tokenizer_info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
        )
        self._compiler = xgrammar.GrammarCompiler(self.tokenizer_info, cache_enabled=True)
        self._vocab_size = vocab_size
        self._stop_ids = numpy.array(sorted(stop_ids), dtype=numpy.int64)
        # Each token's first byte (-1 for a token with no text): what a forced character is read from.
        first_bytes = [text[0] if text else -1 for text in self.tokenizer_info.decoded_vocab]
        first_bytes += [-1] * (vocab_size - len(first_bytes))  # the logits' padding: never allowed
        self._first_bytes = numpy.array(first_bytes[:vocab_size], dtype=numpy.int16)

    def compile(self, structured_outputs: Mapping[str, Any] | None) -> xgrammar.CompiledGrammar | None:
        if structured_outputs is None:
            return None
        if not isinstance(structured_outputs, Mapping):
            raise ConstraintError("structured_outputs must be an object")
        unknown = sorted(set(structured_outputs) - set(KINDS) - OPTIONS)
        if unknown:
            raise ConstraintError(f"structured_outputs has unknown fields {unknown}")
        kinds = [kind for kind in KINDS if structured_outputs.get(kind) not in (None, False)]
        if len(kinds) != 1:
            raise ConstraintError(f"structured_outputs needs exactly one kind of constraint, got {kinds}")
        (kind,) = kinds
        if kind not in SUPPORTED_KINDS:
            raise ConstraintError(f"structured_outputs {kind} is not supported by the local model server")
        compiled = self._compiled(kind, structured_outputs[kind], structured_outputs)
        forced = self._dead_end(compiled)
        if forced is not None:
            after = f"after the text it forces, {forced!r}" if forced else "at its start"
            raise ConstraintError(f"structured_outputs {kind} allows no output {after}: no answer can match it")
        return compiled

    def _compiled(self, kind: str, value: Any, structured_outputs: Mapping[str, Any]) -> xgrammar.CompiledGrammar:
        any_whitespace = not structured_outputs.get("disable_any_whitespace", False)
        try:
            if kind == "choice":
                _check_choices(value)
                return self._compiler.compile_grammar(choice_grammar(value))
            if kind == "regex":
                if not isinstance(value, str):
                    raise ConstraintError("structured_outputs regex must be a string")
                return self._compiler.compile_regex(value)
            if kind == "json":
                schema = value if isinstance(value, str) else json.dumps(value)
                return self._compiler.compile_json_schema(schema, any_whitespace=any_whitespace)
            if kind == "json_object":
                return self._compiler.compile_builtin_json_grammar()
            if not isinstance(value, str):
                raise ConstraintError("structured_outputs grammar must be a string (EBNF)")
            return self._compiler.compile_grammar(value)
        except ConstraintError:
            raise
        except Exception as error:  # xgrammar's parse errors (RuntimeError, ValueError) name the problem
            raise ConstraintError(f"structured_outputs {kind} does not compile: {_first_line(error)}") from None

    def _dead_end(self, compiled: xgrammar.CompiledGrammar) -> str | None:
        """The text after which `compiled` allows no token at all, or None where it allows one at every
        point seen: its start, then each ASCII character it forces (every allowed token begins with
        it), at most _FORCED_STEPS of them. A branch, a stop or a wider character ends the look."""
        matcher = xgrammar.GrammarMatcher(compiled)
        bitmask = xgrammar.allocate_token_bitmask(1, self._vocab_size)
        forced = ""
        for _ in range(_FORCED_STEPS):
            matcher.fill_next_token_bitmask(bitmask)
            allowed = allowed_tokens(bitmask, self._vocab_size)
            if allowed.size == 0:
                return forced
            firsts = numpy.unique(self._first_bytes[allowed])
            if numpy.isin(allowed, self._stop_ids).any() or firsts.size != 1 or not 0 <= firsts[0] < 0x80:
                return None
            character = chr(firsts[0])
            if not matcher.accept_string(character):
                return None
            forced += character
        return None


def allowed_tokens(bitmask: torch.Tensor, vocab_size: int) -> numpy.ndarray:
    """The token ids a one-row xgrammar bitmask (32 tokens an int32 word, lowest bit first) allows."""
    bits = numpy.unpackbits(bitmask.numpy().view(numpy.uint8), bitorder="little")[:vocab_size]
    return numpy.flatnonzero(bits)


def _check_choices(value: Any) -> None:
    if not (isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)):
        raise ConstraintError("structured_outputs choice must be a non-empty list of non-empty strings")
    if len(value) > MAX_CHOICES:
        raise ConstraintError(f"structured_outputs choice has {len(value)} entries, over the local model "
                              f"server's {MAX_CHOICES}")
    size = sum(len(choice.encode("utf-8", "surrogatepass")) for choice in value)
    if size > MAX_CHOICE_BYTES:
        raise ConstraintError(f"structured_outputs choice has {size} bytes in all, over the local model "
                              f"server's {MAX_CHOICE_BYTES}")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
