"""The served model's tokenizer, read from the `tokenizer.json` that `make local` writes for the model
it serves (TASKROUTER_SERVING_TOKENIZER), to count the task catalogue in that model's tokens.

It counts as the model server does (`tokenizer(text, add_special_tokens=False)`: a fast tokenizer is
this same `tokenizers.Tokenizer`). Only an environment that names a tokenizer loads one: a stage
measures its catalogue in bytes, and its Lambda bundle has no tokenizer library.
"""

from __future__ import annotations

import functools

from taskrouter.core.catalogue import TokenCounter
from taskrouter.core.prompting import rendered_size


class TokenizerUnavailable(ValueError):
    """The tokenizer file cannot be read; the message names it and why (one line)."""


@functools.cache
def token_counter(path: str) -> TokenCounter:
    """A text's tokens under the tokenizer saved at `path`; loaded once per process."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerUnavailable(
            "counting tokens needs the tokenizers package (it comes with the local-model extra)"
        ) from None
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as error:  # tokenizers raises a bare Exception for a missing or malformed file
        raise TokenizerUnavailable(f"{path} is not a readable tokenizer.json ({error})") from None

    def count(text: str) -> int:
        try:
            return len(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:  # a lone surrogate has no UTF-8: its bytes (as the prompt counts them) bound its tokens
            return rendered_size(text)

    return count
