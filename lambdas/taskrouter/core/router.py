"""The routing decision: primary first within its deadline, fallback when it cannot decide."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping
from dataclasses import dataclass

from taskrouter.core.backends import Backend, BackendFailure, BackendName, FallbackReason
from taskrouter.core.errors import NoBackendAvailable
from taskrouter.core.events import Event, derive_event
from taskrouter.core.prompting import InvalidOutput, RoutingPrompt, build_prompt
from taskrouter.core.request import RouteRequest, Strategy
from taskrouter.core.tasks import NO_TASK, RegistryUnavailable, Task, TaskSource


@dataclass(frozen=True)
class RouterSettings:
    """Read from the environment by `adapters.settings`, which holds the defaults and bounds."""

    default_strategy: Strategy
    primary_timeout_s: float
    fallback_timeout_s: float
    retry_after_s: int


@dataclass(frozen=True)
class Decision:
    task: str | None
    event: Event
    backend: BackendName
    fallback_reason: FallbackReason | None
    ignored_tasks: tuple[str, ...]
    fallback_detail: str | None = None  # why the primary failed, for logs (never content)


class Router:
    def __init__(
        self,
        registry: TaskSource,
        primary: Backend | None,
        fallback: Backend | None,
        settings: RouterSettings,
    ) -> None:
        self._registry = registry
        self._primary = primary
        self._fallback = fallback
        self._settings = settings
        # A Lambda container serves one request at a time; the second worker covers a primary call
        # that outlived its deadline and is still ending (its client timeout bounds it).
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="primary")

    def route(self, request: RouteRequest) -> Decision:
        try:
            registry = self._registry.tasks()
        except RegistryUnavailable:
            raise NoBackendAvailable(
                "the task registry is unavailable", retry_after_s=self._settings.retry_after_s
            ) from None
        # A registry entry named like the "no task" answer could never be told apart from it.
        usable = {name: task for name, task in registry.items() if name != NO_TASK}
        allowed, ignored = _allowed_tasks(usable, request.tasks)
        current = request.current_task if request.current_task in usable else None
        prompt = build_prompt(
            request.strategy or self._settings.default_strategy, request.conversation, allowed, current
        )

        reason: FallbackReason
        detail: str | None = None
        if self._primary is None:
            reason = "not_configured"
        else:
            try:
                task = self._ask_primary(self._primary, prompt)
                return Decision(task, derive_event(current, task), self._primary.name, None, ignored)
            except (BackendFailure, InvalidOutput) as failure:
                reason, detail = _reason(failure), str(failure) or None
            except Exception as failure:  # a fault of the primary's own is still the fallback's to cover
                reason, detail = "error", type(failure).__name__

        if self._fallback is None:
            raise NoBackendAvailable(
                f"primary: {reason}; no fallback is configured", retry_after_s=self._settings.retry_after_s
            )
        try:
            task = self._fallback.decide(prompt, self._settings.fallback_timeout_s)
        except (BackendFailure, InvalidOutput) as failure:
            raise NoBackendAvailable(
                f"primary: {reason}; fallback: {_reason(failure)}", retry_after_s=self._settings.retry_after_s
            ) from None
        return Decision(task, derive_event(current, task), self._fallback.name, reason, ignored, detail)

    def _ask_primary(self, primary: Backend, prompt: RoutingPrompt) -> str | None:
        timeout_s = self._settings.primary_timeout_s
        future = self._pool.submit(primary.decide, prompt, timeout_s)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise _DeadlinePassed(f"no answer within {timeout_s * 1000:.0f} ms") from None


class _DeadlinePassed(BackendFailure):
    reason = "timeout"


def _reason(failure: BackendFailure | InvalidOutput) -> FallbackReason:
    return failure.reason if isinstance(failure, BackendFailure) else "invalid_output"


def _allowed_tasks(
    usable: Mapping[str, Task], requested: list[str] | None
) -> tuple[dict[str, Task], tuple[str, ...]]:
    """The tasks the decision may name, and the requested names the registry does not hold."""
    if requested is None:
        return dict(usable), ()
    wanted = dict.fromkeys(requested)  # de-duplicated, order kept
    ignored = tuple(name for name in wanted if name not in usable)
    return {name: usable[name] for name in wanted if name in usable}, ignored
