"""The fallback's API key from Secrets Manager, never read inside a request once it is held."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class RefreshedSecret:
    """A secret read when the container starts, then re-read in the background once older than
    `max_age_s`, so that a rotated key is taken up within that time. A request gets the key held;
    it waits on Secrets Manager only while no read has ever succeeded. A failed re-read keeps the
    key held (and is tried again after `retry_after_failure_s`)."""

    def __init__(
        self,
        read: Callable[[], str],
        max_age_s: float,
        retry_after_failure_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._max_age_s = max_age_s
        self._retry_after_failure_s = retry_after_failure_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._read_at = float("-inf")
        self._refreshing = False

    def __call__(self) -> str:
        with self._lock:
            value = self._value
            stale = self._clock() - self._read_at >= self._max_age_s
            refresh = value is not None and stale and not self._refreshing
            if refresh:
                self._refreshing = True
        if value is None:
            return self._refresh()  # nothing held yet: this caller waits (the read is bounded)
        if refresh:
            threading.Thread(target=self._refresh_quietly, name="secret-refresh", daemon=True).start()
        return value

    def _refresh(self) -> str:
        try:
            value = self._read()
        except Exception:
            with self._lock:
                self._refreshing = False
                if self._value is not None:  # keep the key held; try again a little later
                    self._read_at = self._clock() - self._max_age_s + self._retry_after_failure_s
            raise
        with self._lock:
            self._value, self._read_at, self._refreshing = value, self._clock(), False
        return value

    def _refresh_quietly(self) -> None:
        try:
            self._refresh()
        except Exception as error:
            logger.warning("secret re-read failed, keeping the key held: %s", type(error).__name__)
