"""The event a decision means, given the task running before it (docs/api.md, POST /route)."""

from __future__ import annotations

from typing import Literal

Event = Literal["start", "continue", "switch", "end", "none"]


def derive_event(current_task: str | None, decided_task: str | None) -> Event:
    if current_task is None:
        return "none" if decided_task is None else "start"
    if decided_task is None:
        return "end"
    return "continue" if decided_task == current_task else "switch"
