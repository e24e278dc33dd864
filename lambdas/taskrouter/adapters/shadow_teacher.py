"""The shadow teacher: a turn the primary answered (kept or escalated), decided again by the teacher (the
stage's OpenAI model with a reasoning strategy), from the router's own prompt over the record's tasks and
conversation, and compared with the primary's own answer.

A failure of the teacher, a cap included, costs this sample its label and nothing more: it is said in
the label (`error`), never raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from taskrouter.adapters.captured_record import CapturedTurn
from taskrouter.adapters.openai_backend import ANSWER_TOKENS as OPENAI_ANSWER_TOKENS
from taskrouter.adapters.rate_limit import PerMinuteCaps
from taskrouter.core.backends import Backend, BackendFailure
from taskrouter.core.prompting import InvalidOutput, RoutingPrompt, build_prompt, rendered_size
from taskrouter.core.request import Strategy
from taskrouter.core.tasks import NO_TASK

logger = logging.getLogger(__name__)

TeacherError = Literal["timeout", "throttled", "capped", "error", "invalid_output"]
BYTES_PER_TOKEN = 4  # English text in a byte-level BPE: the caps' estimate, not a bill


@dataclass(frozen=True)
class TeacherLabel:
    """The record's `teacher` field."""

    model: str
    strategy: str
    answer: str | None  # a task name or "none"; None on failure
    agrees: bool | None  # with the primary's own answer; None on failure
    latency_ms: float | None  # None when the teacher was not asked (capped, or no time left)
    error: TeacherError | None

    def as_record_field(self) -> dict[str, object]:
        return asdict(self)


def estimated_tokens(prompt: RoutingPrompt) -> int:
    """What a request counts against a per-minute token limit: its messages' bytes / 4, plus the answer
    cap sent with it (OpenAI counts a request's cap before it is answered)."""
    prompt_bytes = sum(rendered_size(message["content"]) for message in prompt.json_messages())
    return prompt_bytes // BYTES_PER_TOKEN + OPENAI_ANSWER_TOKENS[prompt.strategy]


class ShadowTeacher:
    def __init__(
        self,
        backend: Backend | None,
        model: str,
        strategy: Strategy,
        timeout_s: float,
        caps: PerMinuteCaps,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._backend = backend  # None: no OpenAI configured, every sample fails with "error"
        self._model = model
        self._strategy = strategy
        self._timeout_s = timeout_s
        self._caps = caps
        self._clock = clock

    def label(self, turn: CapturedTurn, within_s: float | None = None) -> TeacherLabel | None:
        """The teacher's label of a turn the primary answered, escalated or not; None for one the fallback
        decided alone (its answer is already the label, paid for). The teacher gets its timeout, or
        `within_s` when that is less (what the invocation can give it); with no time at all it is not
        asked (`timeout`)."""
        if not turn.primary_answered:
            return None
        if self._backend is None:
            return self._failed("error", None)
        timeout_s = self._timeout_s if within_s is None else min(self._timeout_s, within_s)
        if timeout_s <= 0:
            return self._failed("timeout", None)
        prompt = build_prompt(self._strategy, turn.conversation, turn.allowed, turn.current_task)
        if not self._caps.admit(estimated_tokens(prompt)):
            return self._failed("capped", None)
        started = self._clock()
        try:
            task = self._backend.decide(prompt, timeout_s).task
        except InvalidOutput:
            return self._failed("invalid_output", started)
        except BackendFailure as failure:
            return self._failed(failure.reason if failure.reason in ("timeout", "throttled") else "error", started)
        except Exception as error:  # a bug or an unforeseen client error: still only this sample lost
            logger.warning("teacher failed unexpectedly: %s", type(error).__name__)
            return self._failed("error", started)
        answer = task or NO_TASK
        return TeacherLabel(
            self._model, self._strategy.value, answer, answer == turn.primary_answer,
            self._elapsed_ms(started), None,
        )  # fmt: skip

    def _failed(self, error: TeacherError, started: float | None) -> TeacherLabel:
        latency_ms = None if started is None else self._elapsed_ms(started)
        return TeacherLabel(self._model, self._strategy.value, None, None, latency_ms, error)

    def _elapsed_ms(self, started: float) -> float:
        return round((self._clock() - started) * 1000, 3)
