"""What keeps a failing primary from costing every request its timeout: the circuit breaker, and the
operations mode an operator (or the alarm handling) sets."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Literal, Protocol

BreakerState = Literal["closed", "open", "half_open"]
# Five primary failures within 30 s open the circuit for 15 s.
DEFAULT_FAILURES, DEFAULT_WINDOW_S, DEFAULT_COOLDOWN_S = 5, 30.0, 15.0


class CircuitBreaker:
    """After `failure_threshold` primary failures within `window_s`, skip the primary for
    `cooldown_s`; then let one probe through: its success closes the circuit, its failure opens it
    again for another cool-down.

    Outcomes are recorded when a primary call ends, whoever answered the request (the router does
    it in the call's own thread). A probe that has not reported within `cooldown_s` (a call that
    outlived every client timeout, or one that never ran) counts as failed, so the circuit can
    never stay half-open for good."""

    def __init__(
        self,
        failure_threshold: int = DEFAULT_FAILURES,
        window_s: float = DEFAULT_WINDOW_S,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failure_threshold
        self._window_s = window_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._probe_since: float | None = None  # when the one half-open probe was let through

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state(self._clock())

    def _state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "half_open" if now - self._opened_at >= self._cooldown_s else "open"

    def allow(self) -> bool:
        """Whether this request may ask the primary (in half-open, only the one probe may)."""
        with self._lock:
            now = self._clock()
            if self._probe_since is not None and now - self._probe_since >= self._cooldown_s:
                self._open(self._probe_since + self._cooldown_s)  # the probe never reported: it failed
            state = self._state(now)
            if state == "closed":
                return True
            if state == "half_open" and self._probe_since is None:
                self._probe_since = now
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures.clear()
            self._opened_at = None
            self._probe_since = None

    def record_failure(self) -> None:
        with self._lock:
            now = self._clock()
            if self._opened_at is not None:  # open or probing: a failure starts a new cool-down
                self._open(now)
                return
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self._window_s:
                self._failures.popleft()
            if len(self._failures) >= self._threshold:
                self._open(now)

    def _open(self, at: float) -> None:
        self._opened_at, self._probe_since = at, None
        self._failures.clear()


class OpsMode(str, Enum):
    PRIMARY_FIRST = "primary_first"
    OPENAI_ONLY = "openai_only"


class OpsModeSource(Protocol):
    def mode(self) -> OpsMode: ...


class FixedOpsMode:
    """The mode where no parameter holds one (local runs, tests)."""

    def __init__(self, mode: OpsMode = OpsMode.PRIMARY_FIRST) -> None:
        self._mode = mode

    def mode(self) -> OpsMode:
        return self._mode
