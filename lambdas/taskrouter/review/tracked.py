"""A file the review writes, which it never writes over content it has not seen.

Each tracked file keeps the digest of its content as this review last read or wrote it. Before a
write the file on disk must still have that content: another `taskrouter review` of the same file,
or an editor, may have changed it since, and writing this review's older view over it would undo
their edits without a word. Content, not mtime and size: an atomic replace gives a new inode, whose
number the file system may hand out again, within one tick of a coarse clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from taskrouter.evaluation.files import write_atomically

T = TypeVar("T")


class ChangedOnDisk(ValueError):
    """A file of the review changed on disk since the review read it: the edit is not made."""


def _digest(path: Path) -> str | None:
    """The digest of the file's content; None when there is no such file."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


class TrackedFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: str | None = None  # the digest of the content last read or written here; None: absent

    def read(self, parse: Callable[[Path], T]) -> tuple[T, str | None]:
        """The file parsed, and the digest of its content taken before: to note as `seen` once every
        file of the review read well. A change between the two then shows as a change at the next
        write (refused: safe), never as content this review has seen."""
        digest = _digest(self.path)
        return parse(self.path), digest

    def changed(self) -> bool:
        return _digest(self.path) != self.seen

    def write(self, text: str) -> None:
        """Write `text` atomically, only over the content this review has seen."""
        refuse_if_changed(self)
        write_atomically(self.path, text)
        self.seen = hashlib.sha256(text.encode("utf-8")).hexdigest()


def refuse_if_changed(*files: TrackedFile) -> None:
    for file in files:
        if file.changed():
            raise ChangedOnDisk(
                f"{file.path} changed on disk since this review read it (another `taskrouter review` of the "
                "same file, or an editor): the edit is not saved; reload the page to see the file as it is now"
            )
