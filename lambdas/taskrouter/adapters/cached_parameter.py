"""A setting held in a parameter store (SSM), read at most once per `max_age_s` and cached: the
operations mode and the capture kill switch are both read this way."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


class CachedParameter(Generic[T]):
    """The parameter's value as `parse` reads it, re-read at most every `max_age_s` by the caller that
    finds it stale (bounded by the reader's client): the others never wait on the store. When the store
    fails, or holds a value `parse` refuses (ValueError), the last good value stays in force until the
    next read (`initial` until one succeeds). Failures are logged by cause, never by content."""

    def __init__(
        self,
        read: Callable[[], str],
        parse: Callable[[str], T],
        initial: T,
        *,
        max_age_s: float,
        label: str,
        show: Callable[[T], str] = str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._parse = parse
        self._max_age_s = max_age_s
        self._label = label  # what the parameter holds, for log lines ("ops mode")
        self._show = show  # a value as log lines name it
        self._clock = clock
        self._lock = threading.Lock()
        self._value = initial
        self._read_at = float("-inf")

    def value(self) -> T:
        with self._lock:
            now = self._clock()
            if now - self._read_at >= self._max_age_s:
                self._read_at = now
                try:
                    self._value = self._parse(self._read().strip())
                except ValueError:
                    logger.warning("%s parameter holds no known value; keeping %s", self._label, self._shown())
                except Exception as error:  # the store unreachable or access denied: keep the value in force
                    logger.warning("%s unreadable (%s); keeping %s", self._label, type(error).__name__, self._shown())
            return self._value

    def _shown(self) -> str:
        return self._show(self._value)
