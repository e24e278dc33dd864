"""The routing decision: the primary within its deadline, the fallback when it cannot decide.

Policy, in order: no primary configured, the operations mode, or an open circuit send the request
straight to the fallback. Otherwise the primary is asked; if it has not answered after the hedge
delay, the fallback is asked too and the first valid answer wins. A primary that fails, answers
invalid output or misses its deadline leaves the decision to the fallback, which is retried once,
with jitter, while its budget allows. A valid answer whose confidence is under the strategy's
calibrated threshold is escalated: the fallback decides (`low_confidence`); where no fallback is
configured or it fails too, the primary's answer stands, still marked `low_confidence` (a threshold
never turns a decided turn into a 503). When nothing decides, the answer is a 503 with Retry-After
whose message says why, in the words of `Explanations` (what to set to change it); it is composed
only then, so a decided request costs nothing more.
"""

from __future__ import annotations

import concurrent.futures as futures
import functools
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from taskrouter.core.backends import Backend, BackendFailure, BackendName, FallbackReason
from taskrouter.core.catalogue import CatalogueBudget, Fitted, fit_catalogue
from taskrouter.core.errors import NoBackendAvailable
from taskrouter.core.events import Event, derive_event
from taskrouter.core.prompting import FULL_TRANSCRIPT, InvalidOutput, RoutingPrompt, TranscriptBound, build_prompt
from taskrouter.core.request import RouteRequest, Strategy
from taskrouter.core.resilience import CircuitBreaker, FixedOpsMode, OpsMode, OpsModeSource
from taskrouter.core.tasks import NO_TASK, RegistryUnavailable, Task, TaskSource, tasks_sha256

_RETRY_JITTER_S = 0.05
# What the breaker counts against the primary (besides a missed deadline); invalid output is not one
# (a primary that answers, even wrongly, is up), nor is no capacity (an endpoint scaled to zero is up,
# and each call is what wakes it), nor a low confidence (an answer, escalated by design).
_PRIMARY_FAULTS = frozenset({"timeout", "error", "throttled"})
# The fallback reasons by which the primary, asked, failed; the others (circuit_open, ops_mode,
# not_configured: not asked; no_capacity: no copy serving, as when scaled to zero) say nothing of its health.
PRIMARY_FAILURES = _PRIMARY_FAULTS | {"invalid_output"}


def primary_failed(fallback_reason: str | None) -> bool | None:
    """Whether the primary, asked, failed this decision; None when the decision says nothing of it."""
    if fallback_reason is None:
        return False
    return True if fallback_reason in PRIMARY_FAILURES else None


@dataclass(frozen=True)
class Budget:
    """How long each backend may take for one strategy's decision."""

    primary_timeout_s: float
    fallback_timeout_s: float
    hedge_after_s: float | None = None  # None: the fallback starts only once the primary failed


@dataclass(frozen=True)
class Threshold:
    """A strategy's calibrated confidence threshold (`taskrouter eval threshold`): an answer below it is
    escalated. `tasks_sha256` is the digest of the task list it was calibrated over: a renormalized
    confidence moves when the registry does, so a decision over another registry says so."""

    value: float
    tasks_sha256: str | None = None


@dataclass(frozen=True)
class Explanations:
    """How a 503 names its cause and what to change. The core knows no environment variable: the
    adapter that reads the settings (`adapters.settings`) gives these in its own names; without them
    the causes are still stated, only with no setting to point at."""

    primary_not_configured: str = "primary not configured"
    fallback_not_configured: str = "fallback not configured"
    primary_location: str | None = None  # e.g. "SageMaker endpoint taskrouter-dev"
    fallback_location: str | None = None  # e.g. "https://api.openai.com/v1"
    # The setting that holds each strategy's timeout, e.g. "TASKROUTER_FALLBACK_TIMEOUT_MS".
    primary_timeout_settings: Mapping[Strategy, str] = field(default_factory=dict)
    fallback_timeout_settings: Mapping[Strategy, str] = field(default_factory=dict)
    # What to check when the fallback answers an HTTP status, e.g. {401: "check OPENAI_API_KEY"}.
    fallback_status_hints: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RouterSettings:
    """Read from the environment by `adapters.settings`, which holds the defaults and bounds.

    The flat timeouts are zero-shot's; strategies that reason before answering have budgets of
    their own in `strategy_budgets` (a strategy not named there takes zero-shot's)."""

    default_strategy: Strategy
    primary_timeout_s: float
    fallback_timeout_s: float
    retry_after_s: int
    hedge_after_s: float | None = None  # None: the fallback starts only once the primary failed
    fallback_retry_min_s: float = 0.5  # a retry needs at least this much of the fallback's budget
    strategy_budgets: Mapping[Strategy, Budget] = field(default_factory=dict)
    explanations: Explanations = field(default_factory=Explanations)
    # The task catalogue's budget and its measure (core.catalogue); None: the catalogue is not fitted.
    catalogue_budget: CatalogueBudget | None = None
    # How much of the conversation a prompt shows: shorter for a model with a small context.
    transcript: TranscriptBound = FULL_TRANSCRIPT
    # Each strategy's confidence threshold for the serving adapter; a strategy not named escalates nothing.
    thresholds: Mapping[Strategy, Threshold] = field(default_factory=dict)

    def budget(self, strategy: Strategy) -> Budget:
        default = Budget(self.primary_timeout_s, self.fallback_timeout_s, self.hedge_after_s)
        return self.strategy_budgets.get(strategy, default)


@dataclass(frozen=True)
class PrimaryOutcome:
    """What the primary did for one decision, as a captured turn records it (docs/capture.md)."""

    answer: str | None = None  # its choice (NO_TASK for no task) when it answered; None otherwise
    latency_ms: float | None = None  # its call's time, or the time waited when it had not ended; None: not asked
    confidence: float | None = None  # its answer's probability, when the engine gives its logprobs


NOT_ASKED = PrimaryOutcome()


@dataclass(frozen=True)
class Decision:
    task: str | None
    event: Event
    backend: BackendName
    fallback_reason: FallbackReason | None
    ignored_tasks: tuple[str, ...]
    strategy: Strategy
    fallback_detail: str | None = None  # why the primary did not decide, for logs (never content)
    catalogue_cut: str | None = None  # what fitting the catalogue to its budget cut, for logs
    # What a captured turn records besides the answer: the running task the router used, the allowed
    # tasks as the prompt showed them (fitted, by name), the primary's part, and the registry's copy
    # the decision was made over (for its digest and the adapter's unseen tasks).
    current_task: str | None = None
    shown_tasks: tuple[Task, ...] = ()
    primary: PrimaryOutcome = NOT_ASKED
    registry: Mapping[str, Task] = field(default_factory=dict, compare=False, repr=False)
    transcript: TranscriptBound = FULL_TRANSCRIPT  # how much of the conversation the prompt showed
    # The threshold the primary's answer was held to (None: none applies), and whether the live
    # registry differs from the task list it was calibrated over (None: not known).
    threshold: float | None = None
    threshold_registry_differs: bool | None = None


@dataclass(frozen=True)
class _Attempt:
    """One backend's answer, or why it gave none."""

    task: str | None = None
    failure: FallbackReason | None = None
    detail: str | None = None
    latency_s: float | None = None  # the call's time (measured for the primary)
    confidence: float | None = None


_Decided = Callable[..., Decision]


def _attempt(backend: Backend, prompt: RoutingPrompt, timeout_s: float) -> _Attempt:
    try:
        answer = backend.decide(prompt, timeout_s)
        return _Attempt(task=answer.task, confidence=answer.confidence)
    except BackendFailure as failure:
        return _Attempt(failure=failure.reason, detail=str(failure) or None)
    except InvalidOutput as invalid:
        return _Attempt(failure="invalid_output", detail=str(invalid) or None)
    except Exception as fault:  # a fault of the adapter's own is still a failure to cover, not a crash
        return _Attempt(failure="error", detail=type(fault).__name__)


def _ask_primary(
    backend: Backend, prompt: RoutingPrompt, timeout_s: float, deadline: float, breaker: CircuitBreaker
) -> _Attempt:
    """One primary call, its outcome recorded by the breaker as the call ends, whoever answered the
    request: a hedge that won does not hide a failing or hanging primary."""
    started = time.monotonic()
    answer = replace(_attempt(backend, prompt, timeout_s), latency_s=time.monotonic() - started)
    if answer.failure in _PRIMARY_FAULTS or time.monotonic() > deadline:
        breaker.record_failure()
    else:  # an answer in time, even an invalid one, shows the primary is up
        breaker.record_success()
    return answer


class Router:
    def __init__(
        self,
        registry: TaskSource,
        primary: Backend | None,
        fallback: Backend | None,
        settings: RouterSettings,
        breakers: Mapping[Strategy, CircuitBreaker] | None = None,
        ops_mode: OpsModeSource | None = None,
        concurrent_requests: int = 1,
    ) -> None:
        self._registry = registry
        self._primary = primary
        self._fallback = fallback
        self._settings = settings
        # One circuit per strategy: a reasoning strategy's missed deadline (a long answer) says
        # nothing of zero-shot's, which keeps its primary; an endpoint that is down opens them all.
        self._breakers = {strategy: (breakers or {}).get(strategy) or CircuitBreaker() for strategy in Strategy}
        self._ops_mode = ops_mode or FixedOpsMode()
        # A Lambda container serves one request at a time (`concurrent_requests` is for callers that
        # share one router, as an evaluation does): per request, the primary and a hedged fallback,
        # plus room for calls that outlived their deadline and are still ending (client timeouts
        # bound them). A call must never wait for a thread: its deadline runs from its submission.
        # Threads start only when needed, so the bound costs nothing until calls pile up.
        self._pool = futures.ThreadPoolExecutor(max_workers=8 * concurrent_requests, thread_name_prefix="backend")

    def route(self, request: RouteRequest) -> Decision:
        try:
            registry = self._registry.tasks()
        except RegistryUnavailable:
            raise self._unavailable("the task registry is unavailable") from None
        allowed, ignored = allowed_tasks(registry, request.tasks)
        fitted = self._fitted(allowed)
        current = request.current_task if request.current_task in registry else None
        strategy = request.strategy or self._settings.default_strategy
        prompt = build_prompt(strategy, request.conversation, fitted.tasks, current, self._settings.transcript)
        budget = self._settings.budget(strategy)
        shown = tuple(fitted.tasks[name] for name in sorted(fitted.tasks))  # the prompt's order
        threshold = self._settings.thresholds.get(strategy)

        def decided(
            backend: BackendName,
            task: str | None,
            reason: FallbackReason | None,
            detail: str | None = None,
            primary: PrimaryOutcome = NOT_ASKED,
        ) -> Decision:
            event = derive_event(current, task)
            held = threshold if primary.confidence is not None else None  # the answer it was held to
            return Decision(
                task, event, backend, reason, ignored, strategy, detail, fitted.cut, current, shown, primary, registry,
                self._settings.transcript,
                threshold=held.value if held else None,
                threshold_registry_differs=_registry_differs(held, registry) if held else None,
            )

        breaker = self._breakers[strategy]
        skip = self._skip_reason(breaker)
        if skip is not None:
            return self._fallback_decides(prompt, budget, decided, skip, None, NOT_ASKED)
        return self._race(prompt, budget, breaker, decided, threshold)

    def _fitted(self, allowed: dict[str, Task]) -> Fitted:
        """The allowed tasks within the catalogue budget: as they are, unless the registry outgrew it."""
        budget = self._settings.catalogue_budget
        return Fitted(allowed) if budget is None else _fit_cached(tuple(allowed.values()), budget)

    def _skip_reason(self, breaker: CircuitBreaker) -> FallbackReason | None:
        if self._primary is None:
            return "not_configured"
        if self._ops_mode.mode() is OpsMode.OPENAI_ONLY:
            return "ops_mode"
        if not breaker.allow():
            return "circuit_open"
        return None

    def _race(
        self, prompt: RoutingPrompt, budget: Budget, breaker: CircuitBreaker, decided: _Decided, threshold: Threshold | None
    ) -> Decision:
        primary_backend = self._primary
        assert primary_backend is not None
        asked_at = time.monotonic()
        deadline = asked_at + budget.primary_timeout_s
        primary = self._pool.submit(_ask_primary, primary_backend, prompt, budget.primary_timeout_s, deadline, breaker)

        def still_waiting() -> PrimaryOutcome:  # the primary had not ended when the decision was made
            return PrimaryOutcome(latency_ms=_ms(time.monotonic() - asked_at))

        hedge: futures.Future[_Attempt] | None = None
        if budget.hedge_after_s is not None and self._fallback is not None:
            done, _ = futures.wait([primary], timeout=budget.hedge_after_s)
            if not done:
                hedge = self._pool.submit(_attempt, self._fallback, prompt, budget.fallback_timeout_s)

        pending = {primary} if hedge is None else {primary, hedge}
        while not primary.done() and (remaining := deadline - time.monotonic()) > 0:
            done, pending = futures.wait(pending, timeout=remaining, return_when=futures.FIRST_COMPLETED)
            if primary in done:
                break
            if hedge in done and hedge.result().failure is None:  # the fallback answered first
                assert self._fallback is not None
                return decided(
                    self._fallback.name, hedge.result().task, "timeout", "hedged: fallback answered first", still_waiting()
                )

        if not primary.done():
            primary.cancel()  # only a call still queued; a running one ends by its client's timeout
            detail = f"no answer within {budget.primary_timeout_s * 1000:.0f} ms"
            return self._fallback_decides(prompt, budget, decided, "timeout", detail, still_waiting(), hedge)
        answer = primary.result()
        latency_ms = None if answer.latency_s is None else _ms(answer.latency_s)
        if answer.failure is None:
            outcome = PrimaryOutcome(answer=answer.task or NO_TASK, latency_ms=latency_ms, confidence=answer.confidence)
            if threshold is not None and answer.confidence is not None and answer.confidence < threshold.value:
                return self._escalate(prompt, budget, decided, answer, outcome, threshold, hedge)
            return decided(primary_backend.name, answer.task, None, primary=outcome)
        outcome = PrimaryOutcome(latency_ms=latency_ms)
        return self._fallback_decides(prompt, budget, decided, answer.failure, answer.detail, outcome, hedge)

    def _escalate(
        self,
        prompt: RoutingPrompt,
        budget: Budget,
        decided: _Decided,
        primary: _Attempt,
        outcome: PrimaryOutcome,
        threshold: Threshold,
        hedge: futures.Future[_Attempt] | None,
    ) -> Decision:
        """A valid answer under the threshold: the fallback's decision, with the whole fallback budget
        from now (a hedged call already started counts as its first attempt). With no fallback, or one
        that fails, the primary's answer stands, marked `low_confidence`: it is the best answer there
        is, and a 503 or a guess would serve the user worse (docs/api.md)."""
        why = f"confidence {outcome.confidence:.4f} under the threshold {threshold.value:g}"
        assert self._primary is not None
        if self._fallback is None:
            return decided(self._primary.name, primary.task, "low_confidence", f"{why}; no fallback: kept", outcome)
        answer = self._fallback_attempt(prompt, budget, hedge)
        if answer.failure is None:
            return decided(self._fallback.name, answer.task, "low_confidence", why, outcome)
        kept = f"{why}; the fallback failed ({answer.failure}{': ' + answer.detail if answer.detail else ''}): kept"
        return decided(self._primary.name, primary.task, "low_confidence", kept, outcome)

    def _fallback_decides(
        self,
        prompt: RoutingPrompt,
        budget: Budget,
        decided: _Decided,
        reason: FallbackReason,
        detail: str | None,
        primary: PrimaryOutcome,
        hedge: futures.Future[_Attempt] | None = None,
    ) -> Decision:
        """The fallback's answer; a hedged call already started counts as its first attempt."""
        fallback = self._fallback
        if fallback is None:
            raise self._no_decision(prompt.strategy, budget, reason, detail, None)
        answer = self._fallback_attempt(prompt, budget, hedge)
        if answer.failure is not None:
            raise self._no_decision(prompt.strategy, budget, reason, detail, answer)
        return decided(fallback.name, answer.task, reason, detail, primary)

    def _fallback_attempt(
        self, prompt: RoutingPrompt, budget: Budget, hedge: futures.Future[_Attempt] | None
    ) -> _Attempt:
        """The fallback's last attempt within its budget: an answer, or the failure that ended it."""
        fallback = self._fallback
        assert fallback is not None
        deadline = time.monotonic() + budget.fallback_timeout_s
        answer: _Attempt | None = None
        attempts = 2
        if hedge is not None:
            attempts -= 1
            try:
                answer = hedge.result(timeout=max(0.0, deadline - time.monotonic()))
            except futures.TimeoutError:
                answer = _Attempt(failure="timeout")
        while answer is None or answer.failure is not None:
            if answer is not None and not self._may_retry(answer, attempts, deadline):
                return answer
            if answer is not None:
                time.sleep(random.uniform(0, _RETRY_JITTER_S))
            attempts -= 1
            answer = _attempt(fallback, prompt, max(0.001, deadline - time.monotonic()))
        return answer

    def _may_retry(self, failed: _Attempt, attempts_left: int, deadline: float) -> bool:
        """Once, for a failure a second call may not repeat, and only while the budget allows."""
        return (
            attempts_left > 0
            and failed.failure != "invalid_output"
            and deadline - time.monotonic() - _RETRY_JITTER_S >= self._settings.fallback_retry_min_s
        )

    def _unavailable(self, message: str) -> NoBackendAvailable:
        return NoBackendAvailable(message, retry_after_s=self._settings.retry_after_s)

    def _no_decision(
        self, strategy: Strategy, budget: Budget, reason: FallbackReason, detail: str | None, fallback: _Attempt | None
    ) -> NoBackendAvailable:
        """The 503 when neither backend decided, its message naming each one's cause (never any
        content of the request: backend details are status codes and exception names)."""
        explain = self._settings.explanations
        primary = _primary_cause(explain, strategy, budget, reason, detail)
        if fallback is None:
            second = explain.fallback_not_configured
        else:
            second = _fallback_cause(explain, strategy, budget, fallback)
        return self._unavailable(f"no backend could decide: {primary}; {second}")


_HTTP_STATUS = re.compile(r"(?:^|\s)([1-5][0-9]{2})$")  # a backend's detail ending in one: "openai 401"
_STATUS_NAMES = {
    400: "bad request", 401: "authentication error", 403: "permission denied", 404: "not found",
    408: "request timeout", 409: "conflict", 413: "request too large", 422: "unprocessable request",
    429: "rate limited",
}  # fmt: skip


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _http_status(detail: str | None) -> int | None:
    match = _HTTP_STATUS.search(detail or "")
    return int(match.group(1)) if match else None


def _where(location: str | None) -> str:
    return f" from {location}" if location else ""


def _timed_out(who: str, timeout_s: float, setting: str | None) -> str:
    return f"{who} timed out after {timeout_s * 1000:.0f} ms" + (f" ({setting})" if setting else "")


def _primary_cause(
    explain: Explanations, strategy: Strategy, budget: Budget, reason: FallbackReason, detail: str | None
) -> str:
    if reason == "not_configured":
        return explain.primary_not_configured
    if reason == "ops_mode":
        return "primary skipped: the operations mode is openai_only"
    if reason == "circuit_open":
        return "primary skipped: its circuit breaker is open after repeated failures"
    if reason == "timeout":
        return _timed_out("primary", budget.primary_timeout_s, explain.primary_timeout_settings.get(strategy))
    where = f" ({explain.primary_location})" if explain.primary_location else ""
    if reason == "no_capacity":
        return f"primary has no capacity now: scaled to zero, or starting{where}"
    what = {"error": "failed", "throttled": "throttled", "invalid_output": "answered invalid output"}.get(reason, reason)
    return f"primary {what}" + (f": {detail}" if detail else "") + where


def _fallback_cause(explain: Explanations, strategy: Strategy, budget: Budget, answer: _Attempt) -> str:
    """The fallback's last attempt, in words: an HTTP status by its name, where it came from and
    what to check; a timeout with the setting that bounds it."""
    where = _where(explain.fallback_location)
    if answer.failure == "timeout":
        return _timed_out("fallback", budget.fallback_timeout_s, explain.fallback_timeout_settings.get(strategy))
    if answer.failure == "invalid_output":
        return "fallback answered invalid output" + (f": {answer.detail}" if answer.detail else "")
    status = _http_status(answer.detail)
    if status is not None:
        name = _STATUS_NAMES.get(status, "server error" if status >= 500 else "error")
        hint = explain.fallback_status_hints.get(status)
        return f"fallback failed: {name} (HTTP {status}{where}" + (f"; {hint})" if hint else ")")
    if answer.detail == "APIConnectionError":
        return f"fallback failed: could not connect to {explain.fallback_location or 'its server'}"
    return "fallback failed: " + (answer.detail or answer.failure or "error")


def _registry_differs(threshold: Threshold, registry: Mapping[str, Task]) -> bool | None:
    if threshold.tasks_sha256 is None:
        return None
    return _registry_digest(tuple(registry.values())) != threshold.tasks_sha256


@functools.lru_cache(maxsize=8)
def _registry_digest(tasks: tuple[Task, ...]) -> str:
    """The registry's digest as an evaluation report's `tasks_sha256`, once per copy of it."""
    return tasks_sha256(tasks)


@functools.lru_cache(maxsize=8)
def _fit_cached(tasks: tuple[Task, ...], budget: CatalogueBudget) -> Fitted:
    """Fitting costs a few renders of the catalogue; the registry changes rarely (its copy lives 15 s),
    so the same tasks are fitted once."""
    return fit_catalogue({task.name: task for task in tasks}, budget)


def allowed_tasks(
    registry: Mapping[str, Task], requested: list[str] | None
) -> tuple[dict[str, Task], tuple[str, ...]]:
    """The tasks the decision may name, and the requested names the registry does not hold."""
    if requested is None:
        return dict(registry), ()
    wanted = dict.fromkeys(requested)  # de-duplicated, order kept
    ignored = tuple(name for name in wanted if name not in registry)
    return {name: registry[name] for name in wanted if name in registry}, ignored
