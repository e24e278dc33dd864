"""vLLM's `structured_outputs` as xgrammar grammars: the engine vLLM itself uses by default, so an
answer is held to the same automaton token by token.

- `choice`: a grammar of exactly those strings, as vLLM writes it (`choice_as_grammar` in
  vllm/v1/structured_output/utils.py: `root ::= "a" | "b"`);
- `regex`: `compile_regex` (vLLM's xgrammar backend does the same);
- `json` (a schema), `json_object` and `grammar` (EBNF) as vLLM's xgrammar backend compiles them.

As in vLLM, a complete match allows only the end of the sequence: decoding stops there, the stop token
not shown in the text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import xgrammar

KINDS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")  # vLLM's, one at most
SUPPORTED_KINDS = ("json", "regex", "choice", "grammar", "json_object")
OPTIONS = frozenset({"disable_fallback", "disable_any_whitespace", "disable_additional_properties", "whitespace_pattern"})


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
        value = structured_outputs[kind]
        any_whitespace = not structured_outputs.get("disable_any_whitespace", False)
        try:
            if kind == "choice":
                if not (isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)):
                    raise ConstraintError("structured_outputs choice must be a non-empty list of non-empty strings")
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


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
