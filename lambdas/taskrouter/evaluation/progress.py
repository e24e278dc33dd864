"""A progress bar for the tools that work through many items (evaluation, data generation): rich's
on a terminal; elsewhere (CI, a log file) a plain line at every tenth of the way."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable


class progress_bar:
    """Progress on stderr, advanced from any thread."""

    def __init__(self, total: int, title: str, *, enabled: bool) -> None:
        self._total, self._title, self._enabled = total, title, enabled
        self._bar = None

    def __enter__(self) -> Callable[[], None]:
        if not self._enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        if not console.is_terminal:
            return self._plain()
        self._bar = Progress(
            TextColumn(self._title), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        )
        self._bar.start()
        task = self._bar.add_task(self._title, total=self._total)
        return lambda: self._bar.advance(task)

    def _plain(self) -> Callable[[], None]:
        lock, done = threading.Lock(), [0]
        step = max(1, self._total // 10)

        def advance() -> None:
            with lock:
                done[0] += 1
                if done[0] % step == 0 or done[0] == self._total:
                    print(f"{self._title}: {done[0]}/{self._total}", file=sys.stderr, flush=True)

        return advance

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()
