"""The catalogue budget: how much task catalogue a prompt may carry, and fitting a registry into it.

The model serves sequences of at most its serving length in tokens (a stage's OPTION_MAX_MODEL_LEN,
a local model's context). Everything in the prompt but the catalogue is bounded by the request's and
the task fields' limits, so the catalogue's budget is the serving length minus:
- the chat template's tokens (`TEMPLATE_TOKENS`);
- the largest answer cap of any strategy;
- the largest user message: the running-task line and the bounded, fenced transcript, in bytes (a
  byte-level BPE never makes more tokens than bytes, whatever the text), the transcript's bound
  being the one for that serving length (`transcript_bound`);
- the longest strategy's fixed text (role, rules, answer format) and its worked examples.
Each term is computed from the prompt's own code, so a change of the prompt changes the budget.

A catalogue is measured in one of two units:
- bytes (a stage): its rendered UTF-8 bytes, which bound its tokens whatever the tokenizer; the fixed
  text is taken with the worst worked examples the task fields admit (few-shot's come from the tasks'
  examples). No tokenizer is needed, so the Lambda carries none.
- tokens of the served model's tokenizer (`make local` with a local model, whose small context cannot
  hold the byte rule's worst case): the longest system message over the tasks, counted exactly, less
  the longest over no task; the worked examples drawn from the tasks count as the catalogue's.

The registry refuses a write that would take its catalogue past the budget (`catalogue_too_large`);
a registry over it all the same (older data, concurrent writers) still routes: `fit_catalogue`
drops examples, then shortens descriptions, until it fits, measured as the budget measures.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from taskrouter.core.prompting import (
    DEMONSTRATED_TASKS,
    EXAMPLES_SHOWN,
    TEMPLATE_TOKENS,
    RoutingPrompt,
    build_prompt,
    largest_demonstrations,
    max_context_bytes,
    render_catalogue,
    rendered_size,
    transcript_bound,
)
from taskrouter.core.request import Message, Strategy
from taskrouter.core.task_spec import MAX_EXAMPLE_CHARS
from taskrouter.core.tasks import MAX_TASK_NAME_CHARS, Task

TokenCounter = Callable[[str], int]  # a text's tokens under the served model's tokenizer
Unit = Literal["bytes", "tokens"]

# The character that renders largest in a one-line slot ("&" is escaped as "&amp;"): the worst case
# of a demonstration's text.
_WIDEST_CHARACTER = "&"
_SHORTENED = "…"
_ANY_CONVERSATION = (Message(role="user", content="x"),)  # the system message does not depend on it


def catalogue_bytes(tasks: Iterable[Task]) -> int:
    """The rendered bytes of the catalogue a prompt over these tasks shows."""
    return rendered_size(render_catalogue(sorted(tasks, key=lambda task: task.name)))


def _longest_system(tasks: Iterable[Task], size: Callable[[str], int]) -> int:
    """The largest system message over `tasks` or any part of them a request allows, of every strategy
    and answer form, as `size` measures it: few-shot's with the largest worked examples any part shows."""
    allowed = {task.name: task for task in tasks}
    largest = largest_demonstrations(allowed.values(), size)
    prompts = (build_prompt(strategy, _ANY_CONVERSATION, allowed, None) for strategy in Strategy)
    return max(
        (replace(prompt, demonstrations=largest) if prompt.demonstrations else prompt).system_size(size)
        for prompt in prompts
    )


@functools.cache
def _largest_fixed_bytes() -> int:
    """The largest system message less its catalogue, over every strategy and answer form, with the
    most and widest demonstrations the task fields admit."""
    worst = [
        Task(f"{'x' * (MAX_TASK_NAME_CHARS - 2)}{index:02d}", "d", (_WIDEST_CHARACTER * MAX_EXAMPLE_CHARS,))
        for index in range(DEMONSTRATED_TASKS)
    ]
    return _longest_system(worst, rendered_size) - catalogue_bytes(worst)


def _other_parts(serving_tokens: int) -> int:
    """The tokens the prompt's parts besides its system message may take: the chat template, the
    largest answer cap and the longest user message (its bytes) for that serving length."""
    transcript = transcript_bound(serving_tokens)
    return TEMPLATE_TOKENS + RoutingPrompt.largest_answer_tokens() + max_context_bytes(transcript)


@dataclass(frozen=True)
class CatalogueBudget:
    """How much catalogue a prompt may carry (`limit`, in `unit`), and how a catalogue is measured:
    rendered bytes, or the served model's tokens (`count_tokens`; `fixed_tokens` is the longest system
    message over no task, which the catalogue's tokens are counted above)."""

    limit: int
    unit: Unit = "bytes"
    count_tokens: TokenCounter | None = None
    fixed_tokens: int = 0

    def size(self, tasks: Iterable[Task]) -> int:
        """The catalogue of these tasks, in the budget's unit."""
        if self.count_tokens is None:
            return catalogue_bytes(tasks)
        return _longest_system(tasks, self.count_tokens) - self.fixed_tokens


def byte_budget(serving_tokens: int) -> CatalogueBudget:
    """The budget in rendered bytes for a model serving `serving_tokens` tokens, whatever its tokenizer."""
    return CatalogueBudget(serving_tokens - _other_parts(serving_tokens) - _largest_fixed_bytes())


def token_budget(serving_tokens: int, count_tokens: TokenCounter) -> CatalogueBudget:
    """The budget in the served model's tokens, for a model serving `serving_tokens` tokens."""
    fixed = _longest_system((), count_tokens)
    return CatalogueBudget(serving_tokens - _other_parts(serving_tokens) - fixed, "tokens", count_tokens, fixed)


@dataclass(frozen=True)
class CatalogueCheck:
    """A registry write's effect on the catalogue: `size` after it, `before` it, of `budget` (in `unit`)."""

    size: int
    before: int
    budget: int
    unit: Unit = "bytes"

    @property
    def refused(self) -> bool:
        """Past the budget and growing: a write that shrinks an over-budget catalogue is let through."""
        return self.size > self.budget and self.size > self.before

    @property
    def message(self) -> str:
        return f"catalogue {self.size} {self.unit} of {self.budget}, {max(self.budget - self.before, 0)} left"


def check_write(
    current: Iterable[Task], written: Iterable[Task], removed: Iterable[str], budget: CatalogueBudget
) -> CatalogueCheck:
    """The catalogue after writing `written` (new or replacing tasks of the same name) and removing
    the tasks named `removed`, against the one before."""
    before = {task.name: task for task in current}
    after = {name: task for name, task in before.items() if name not in set(removed)}
    after.update((task.name, task) for task in written)
    return CatalogueCheck(budget.size(after.values()), budget.size(before.values()), budget.limit, budget.unit)


@dataclass(frozen=True)
class Fitted:
    """A catalogue fitted to its budget, and what was cut (None: nothing)."""

    tasks: dict[str, Task]
    cut: str | None = None


def fit_catalogue(tasks: Mapping[str, Task], budget: CatalogueBudget) -> Fitted:
    """The tasks as they fit the budget: unchanged when they do; otherwise with fewer examples shown
    (down to none), then with every description cut to the longest length that fits. Names are never
    cut (they are the answers); a catalogue of names alone over the budget is returned as short as
    it gets, and says so."""

    def fits(fitted: dict[str, Task]) -> bool:
        return budget.size(fitted.values()) <= budget.limit

    if fits(dict(tasks)):
        return Fitted(dict(tasks))
    for shown in range(EXAMPLES_SHOWN - 1, -1, -1):
        fewer = {name: replace(task, examples=task.examples[:shown]) for name, task in tasks.items()}
        if fits(fewer):
            return Fitted(fewer, f"examples cut to {shown} a task")

    def shortened(limit: int) -> dict[str, Task]:
        return {name: replace(task, description=_shorten(task.description, limit)) for name, task in fewer.items()}

    low, high = 1, max(len(task.description) for task in fewer.values())
    while low < high:  # the longest description length that fits, by bisection
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(shortened(middle)) else (low, middle - 1)
    fitted = shortened(low)
    still_over = not fits(fitted)
    return Fitted(fitted, f"examples dropped, descriptions cut to {low} characters" + (", still over" if still_over else ""))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - len(_SHORTENED), 0)] + _SHORTENED
