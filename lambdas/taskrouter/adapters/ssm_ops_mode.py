"""The operations mode, read from an SSM parameter that operators (and the alarm handling) set."""

from __future__ import annotations

import time
from collections.abc import Callable

from taskrouter.adapters.cached_parameter import CachedParameter
from taskrouter.core.resilience import OpsMode


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
        self._parameter = CachedParameter(
            read_parameter, OpsMode, OpsMode.PRIMARY_FIRST,
            max_age_s=max_age_s, label="ops mode", show=lambda mode: mode.value, clock=clock,
        )  # fmt: skip

    def mode(self) -> OpsMode:
        return self._parameter.value()
