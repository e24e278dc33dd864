"""The capture kill switch: an SSM parameter holding `on` or `off`, which stops capture with no deploy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from taskrouter.adapters.cached_parameter import CachedParameter

MAX_AGE_S = 60.0  # an operator's `off` takes effect within a minute
_STATES = {"on": True, "off": False}


class CaptureSwitch(Protocol):
    def is_on(self) -> bool: ...


class AlwaysOn:
    """No parameter named: capture follows the stage's setting alone."""

    def is_on(self) -> bool:
        return True


def _state(text: str) -> bool:
    try:
        return _STATES[text.lower()]
    except KeyError:
        raise ValueError("neither on nor off") from None


class SsmCaptureSwitch:
    """The parameter, read at most every `max_age_s` by the request that finds it stale (a sampled one:
    the switch is asked only once a turn is drawn). SSM failing, or a value other than on/off, keeps the
    last state (on, until a read succeeds)."""

    def __init__(
        self, read_parameter: Callable[[], str], max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._parameter = CachedParameter(
            read_parameter, _state, True,
            max_age_s=max_age_s, label="capture switch", show=lambda on: "on" if on else "off", clock=clock,
        )  # fmt: skip

    def is_on(self) -> bool:
        return self._parameter.value()
