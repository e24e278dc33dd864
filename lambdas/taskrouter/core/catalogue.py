"""The catalogue budget: how much task catalogue a prompt may carry, and fitting a registry into it.

The endpoint serves sequences of at most its serving length in tokens (the LMI container's
OPTION_MAX_MODEL_LEN). A byte-level BPE never makes more tokens than bytes, so a prompt whose
rendered UTF-8 bytes, plus the chat template's tokens and the answer's cap, stay under the serving
length is served whatever its text. Everything in the prompt but the catalogue is bounded by the
request's and the task fields' limits, so the catalogue's budget is the serving length minus:
- the chat template's tokens (`TEMPLATE_TOKENS`);
- the largest answer cap of any strategy;
- the largest user message: the running-task line and the bounded, fenced transcript;
- the longest strategy's fixed text (role, rules, answer format), with the worst demonstrations the
  registry's fields admit (few-shot's worked examples come from the tasks' examples).
Each term is computed from the prompt's own code, so a change of the prompt changes the budget.

The registry refuses a write that would take its catalogue past the budget (`catalogue_too_large`);
a registry over it all the same (older data, concurrent writers) still routes: `fit_catalogue`
drops examples, then shortens descriptions, until it fits.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from taskrouter.core.prompting import (
    DEMONSTRATED_TASKS,
    EXAMPLES_SHOWN,
    TEMPLATE_TOKENS,
    RoutingPrompt,
    build_prompt,
    max_context_bytes,
    render_catalogue,
    rendered_size,
)
from taskrouter.core.request import Message, Strategy
from taskrouter.core.task_spec import MAX_EXAMPLE_CHARS
from taskrouter.core.tasks import MAX_TASK_NAME_CHARS, Task

# The character that renders largest in a one-line slot ("&" is escaped as "&amp;"): the worst case
# of a demonstration's text.
_WIDEST_CHARACTER = "&"
_SHORTENED = "…"


def catalogue_bytes(tasks: Iterable[Task]) -> int:
    """The rendered bytes of the catalogue a prompt over these tasks shows."""
    return rendered_size(render_catalogue(sorted(tasks, key=lambda task: task.name)))


@functools.cache
def _largest_fixed_bytes() -> int:
    """The largest system message less its catalogue, over every strategy and answer form, with the
    most and widest demonstrations the task fields admit."""
    worst = [
        Task(f"{'x' * (MAX_TASK_NAME_CHARS - 2)}{index:02d}", "d", (_WIDEST_CHARACTER * MAX_EXAMPLE_CHARS,))
        for index in range(DEMONSTRATED_TASKS)
    ]
    conversation = [Message(role="user", content="x")]
    catalogue = catalogue_bytes(worst)
    return max(
        build_prompt(strategy, conversation, {task.name: task for task in worst}, None).system_bytes - catalogue
        for strategy in Strategy
    )


@functools.cache
def catalogue_budget(serving_tokens: int) -> int:
    """The catalogue's budget in rendered bytes for an endpoint serving `serving_tokens` tokens."""
    return (
        serving_tokens
        - TEMPLATE_TOKENS
        - RoutingPrompt.largest_answer_tokens()
        - max_context_bytes()
        - _largest_fixed_bytes()
    )


@dataclass(frozen=True)
class CatalogueCheck:
    """A registry write's effect on the catalogue: `size` after it, `before` it, of `budget`."""

    size: int
    before: int
    budget: int

    @property
    def refused(self) -> bool:
        """Past the budget and growing: a write that shrinks an over-budget catalogue is let through."""
        return self.size > self.budget and self.size > self.before

    @property
    def message(self) -> str:
        return f"catalogue {self.size} bytes of {self.budget}, {max(self.budget - self.before, 0)} left"


def check_write(current: Iterable[Task], written: Iterable[Task], removed: Iterable[str], budget: int) -> CatalogueCheck:
    """The catalogue after writing `written` (new or replacing tasks of the same name) and removing
    the tasks named `removed`, against the one before."""
    before = {task.name: task for task in current}
    after = {name: task for name, task in before.items() if name not in set(removed)}
    after.update((task.name, task) for task in written)
    return CatalogueCheck(catalogue_bytes(after.values()), catalogue_bytes(before.values()), budget)


@dataclass(frozen=True)
class Fitted:
    """A catalogue fitted to its budget, and what was cut (None: nothing)."""

    tasks: dict[str, Task]
    cut: str | None = None


def fit_catalogue(tasks: Mapping[str, Task], budget: int) -> Fitted:
    """The tasks as they fit the budget: unchanged when they do; otherwise with fewer examples shown
    (down to none), then with every description cut to the longest length that fits. Names are never
    cut (they are the answers); a catalogue of names alone over the budget is returned as short as
    it gets, and says so."""
    if catalogue_bytes(tasks.values()) <= budget:
        return Fitted(dict(tasks))
    for shown in range(EXAMPLES_SHOWN - 1, -1, -1):
        fewer = {name: replace(task, examples=task.examples[:shown]) for name, task in tasks.items()}
        if catalogue_bytes(fewer.values()) <= budget:
            return Fitted(fewer, f"examples cut to {shown} a task")

    def shortened(limit: int) -> dict[str, Task]:
        return {name: replace(task, description=_shorten(task.description, limit)) for name, task in fewer.items()}

    low, high = 1, max(len(task.description) for task in fewer.values())
    while low < high:  # the longest description length that fits, by bisection
        middle = (low + high + 1) // 2
        low, high = (middle, high) if catalogue_bytes(shortened(middle).values()) <= budget else (low, middle - 1)
    fitted = shortened(low)
    still_over = catalogue_bytes(fitted.values()) > budget
    return Fitted(fitted, f"examples dropped, descriptions cut to {low} characters" + (", still over" if still_over else ""))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - len(_SHORTENED), 0)] + _SHORTENED
