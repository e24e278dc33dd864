"""Caps on what is sent per minute: requests and tokens, as OpenAI limits a model (per organisation)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 60.0


class PerMinuteCaps:
    """At most `requests` requests and `tokens` tokens in any 60 s: a request over either cap is refused,
    never delayed (a sample is worth less than the fallback's share of the limits).

    The window lives in the process: the teacher function's reserved concurrency of 1 makes it the
    function's; a fresh execution environment starts with an empty window."""

    def __init__(self, requests: int, tokens: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._requests = requests
        self._tokens = tokens
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: deque[tuple[float, int]] = deque()  # (when, tokens) of each request admitted
        self._tokens_sent = 0

    def admit(self, tokens: int) -> bool:
        """Whether a request of `tokens` fits both caps now; if it does, it is counted."""
        with self._lock:
            now = self._clock()
            while self._sent and self._sent[0][0] <= now - WINDOW_S:
                self._tokens_sent -= self._sent.popleft()[1]
            if len(self._sent) + 1 > self._requests or self._tokens_sent + tokens > self._tokens:
                return False
            self._sent.append((now, tokens))
            self._tokens_sent += tokens
            return True
