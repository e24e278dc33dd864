"""What `adapter train` tells while it trains: the step out of the run's total, the loss, the time a
step takes and the time left. A step on a CPU takes tens of seconds and a run tens of minutes, so a
user needs the total and an estimate, not a bare "step 3".

On a terminal, one line redrawn in place (tqdm, which the training libraries already bring); in a
log (CI, SageMaker's CloudWatch stream, a pipe), one plain line a step, which a log keeps readable.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol


class Progress(Protocol):
    def step(self, epoch: int, steps: int, loss: float) -> None: ...

    def close(self) -> None: ...


def total_steps(examples: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """The steps a run makes: a batch a step, every epoch, unless --max-steps stops it first."""
    planned = epochs * math.ceil(examples / batch_size)
    return planned if max_steps is None else min(planned, max_steps)


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LineProgress:
    """One line a step through `log`, with the rate measured over this process's steps (a resumed
    run's earlier steps took their time elsewhere)."""

    def __init__(self, total: int, done: int, log: Callable[[str], Any], clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.first, self.log, self.clock = total, done, log, clock
        self.started = clock()

    def step(self, epoch: int, steps: int, loss: float) -> None:
        made = steps - self.first
        per_step = (self.clock() - self.started) / made if made > 0 else 0.0
        left = per_step * max(self.total - steps, 0)
        self.log(f"epoch {epoch} step {steps}/{self.total}: loss {loss:.4f} "
                 f"({per_step:.1f} s a step, about {duration(left)} left)")

    def close(self) -> None:
        pass


class TerminalProgress:
    """A bar redrawn in place on a terminal: steps, rate, elapsed and left (tqdm's), with the loss."""

    def __init__(self, total: int, done: int, stream: Any) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, file=stream, unit="step", desc="training", dynamic_ncols=True)

    def step(self, epoch: int, steps: int, loss: float) -> None:
        self.bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", refresh=False)
        self.bar.update(steps - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def progress_for(total: int, done: int, log: Callable[[str], Any], stream: Any = None) -> Progress:
    """A bar when the run prints to a terminal (the command line's own `print`), plain lines otherwise."""
    stream = sys.stdout if stream is None else stream
    if log is print and getattr(stream, "isatty", lambda: False)():
        return TerminalProgress(total, done, stream)
    return LineProgress(total, done, log)
