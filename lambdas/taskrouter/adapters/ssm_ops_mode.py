"""The operations mode, read from an SSM parameter that operators (and the alarm handling) set."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from taskrouter.core.resilience import OpsMode

logger = logging.getLogger(__name__)


class SsmOpsMode:
    """The parameter's value, re-read at most every `max_age_s`. When SSM fails or holds a value
    that is not a mode, the last good mode stays in force until the next read (primary_first at
    first): the router never waits on SSM more than once per `max_age_s`."""

    def __init__(
        self,
        read_parameter: Callable[[], str],
        max_age_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read_parameter
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._mode = OpsMode.PRIMARY_FIRST
        self._read_at = float("-inf")

    def mode(self) -> OpsMode:
        with self._lock:
            now = self._clock()
            if now - self._read_at >= self._max_age_s:
                self._read_at = now
                try:
                    self._mode = OpsMode(self._read().strip())
                except ValueError:
                    logger.warning("ops mode parameter holds no known mode; keeping %s", self._mode.value)
                except Exception as error:  # SSM unreachable or denied: keep the mode in force
                    logger.warning("ops mode unreadable (%s); keeping %s", type(error).__name__, self._mode.value)
            return self._mode
