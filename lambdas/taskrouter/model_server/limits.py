"""What bounds the model server's work: each request's deadline and client, the line requests wait in,
and the prefix cache's memory (docs/local-model.md, "Limits").

A CPU decodes one request at a time, for seconds; without these bounds one request nobody waits for
(a client that left, or a frozen Lambda container under `make local` whose socket stays open) holds
the model for the whole context, and every later request waits behind it.

- `Watch`: a request's deadline and whether its client is gone, checked before every forward pass
  (so a decode stops within one token step of either), and while the request waits its turn;
- `Turns`: one decode at a time, at most `queue` requests waiting; one more is refused at once, as
  the stage's container refuses a job beyond its queue (protocol.busy).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

DEADLINE_VARIABLE = "TASKROUTER_MODEL_DEADLINE_MS"
QUEUE_VARIABLE = "TASKROUTER_MODEL_QUEUE"
PREFIX_CACHE_VARIABLE = "TASKROUTER_MODEL_PREFIX_CACHE_MB"
# No longer than make local's primary timeout (local.py), the settings' highest: past it the router
# has given up on the answer.
DEFAULT_DEADLINE_MS = 10_000
DEFAULT_QUEUE = 8  # make local runs 4 containers by default: room for them and a few other callers
DEFAULT_PREFIX_CACHE_MB = 512  # SmolLM2-135M's keys and values: ~46 KB a token, ~45 MB a system message
_WAIT_POLL_S = 0.05  # how often a waiting request looks at its client and deadline


@dataclass(frozen=True)
class Limits:
    deadline_s: float = DEFAULT_DEADLINE_MS / 1000
    queue: int = DEFAULT_QUEUE
    prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_MB * 1024 * 1024


class Stopped(Exception):
    """A request ended before its answer; `tokens`: how many it had decoded."""

    reason = "stopped"

    def __init__(self, tokens: int = 0) -> None:
        super().__init__(f"{self.reason} after {tokens} tokens")
        self.tokens = tokens


class ClientGone(Stopped):
    reason = "abandoned by its client"


class DeadlinePassed(Stopped):
    reason = "past its deadline"


class QueueFull(Exception):
    """A request beyond the line's bound: refused at once."""


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Watch:
    """When a request stops early: at `deadline` (time.monotonic()), or once `client_gone()`."""

    deadline: float = math.inf
    client_gone: Callable[[], bool] = _never

    @classmethod
    def within(cls, seconds: float, client_gone: Callable[[], bool] = _never) -> Watch:
        return cls(time.monotonic() + seconds, client_gone)

    def check(self, tokens: int = 0) -> None:
        """Raises ClientGone or DeadlinePassed (with the tokens decoded so far) when the request
        should stop now."""
        if self.client_gone():
            raise ClientGone(tokens)
        if time.monotonic() >= self.deadline:
            raise DeadlinePassed(tokens)


UNWATCHED = Watch()


class Turns:
    """One holder at a time, the others waiting in arrival order, at most `queue` of them."""

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self._changed = threading.Condition()
        self._busy = False
        self._line: deque[object] = deque()

    @property
    def waiting(self) -> int:
        with self._changed:
            return len(self._line)

    @contextmanager
    def turn(self, watch: Watch = UNWATCHED) -> Iterator[None]:
        """Held for the body; raises QueueFull at once when the line is full, or what `watch.check`
        raises while waiting (the request then leaves the line)."""
        ticket = object()
        with self._changed:
            if (self._busy or self._line) and len(self._line) >= self.queue:
                raise QueueFull(f"{len(self._line)} requests are waiting, the most this server queues")
            self._line.append(ticket)
            try:
                while self._busy or self._line[0] is not ticket:
                    self._changed.wait(_WAIT_POLL_S)
                    watch.check()
            except BaseException:
                self._line.remove(ticket)
                self._changed.notify_all()
                raise
            self._line.popleft()
            self._busy = True
        try:
            yield
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
