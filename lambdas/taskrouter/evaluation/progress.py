"""A progress bar for the tools that work through many items (evaluation, data generation)."""

from __future__ import annotations

from collections.abc import Callable


class progress_bar:
    """A progress bar on stderr (rich), advanced from any thread."""

    def __init__(self, total: int, title: str, *, enabled: bool) -> None:
        self._total, self._title, self._enabled = total, title, enabled

    def __enter__(self) -> Callable[[], None]:
        if not self._enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn(self._title), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._bar.start()
        task = self._bar.add_task("turns", total=self._total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *_: object) -> None:
        if self._enabled:
            self._bar.stop()
