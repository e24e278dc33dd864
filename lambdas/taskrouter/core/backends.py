"""What the router asks of a backend, and how a backend may fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from taskrouter.core.prompting import RoutingPrompt

BackendName = Literal["sagemaker", "openai"]
FallbackReason = Literal[
    "timeout", "error", "throttled", "invalid_output", "low_confidence", "circuit_open", "ops_mode",
    "not_configured", "no_capacity",
]


@dataclass(frozen=True)
class Answer:
    """A backend's decision: the task (None for no task) and, where the engine gives its tokens'
    logprobs, the answer's probability under its constraint (core.confidence)."""

    task: str | None
    confidence: float | None = None


class BackendFailure(Exception):
    """The backend gave no answer; `reason` is the contract's `fallback_reason` for it."""

    reason: FallbackReason = "error"


class BackendTimeout(BackendFailure):
    reason = "timeout"


class BackendThrottled(BackendFailure):
    reason = "throttled"


class BackendError(BackendFailure):
    reason = "error"


class BackendNoCapacity(BackendFailure):
    """The primary has no serving copy now (scaled to zero, or starting): up, but not answering."""

    reason = "no_capacity"


class Backend(Protocol):
    name: BackendName

    def decide(self, prompt: RoutingPrompt, timeout_s: float) -> Answer:
        """The decided task name (None for no task), with its confidence where the engine gives one.

        Raises `BackendFailure` when no answer came, `InvalidOutput` when the answer is not
        exactly one of `prompt.choices`.
        """
        ...
