"""Where `taskrouter data generate` writes its dataset: standard output (`-`), a new file, or, with
`--force` only, a file that exists. Checked before the first request, so that a run never ends
unable to write; checked again when writing, so that a file another process created meanwhile is
never replaced without `--force`."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from taskrouter.evaluation.files import write_atomically, write_new_atomically

STANDARD_OUTPUT = "-"


class DestinationError(Exception):
    """Why the dataset cannot be, or was not, written there: one line, naming the fix."""


@dataclass(frozen=True)
class Destination:
    path: Path | None  # None: standard output
    force: bool

    @classmethod
    def check(cls, out: str, *, force: bool) -> Destination:
        if out == STANDARD_OUTPUT:
            return cls(None, force)
        path = Path(out)
        if path.is_dir():
            raise DestinationError(f"--out {out} is a folder: give a file in it, e.g. --out {path / 'synthetic.jsonl'}")
        if not path.parent.is_dir():
            raise DestinationError(f"--out {out}: {path.parent} is not a folder; create it first")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise DestinationError(f"--out {out}: no permission to write in {path.parent}; give another --out")
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            raise DestinationError(f"--out {out} is not a regular file (a device, a pipe...): give a file, or - for standard output")
        if path.exists() and not force:
            raise DestinationError(f"--out {out} exists: give --force to replace it, or another --out")
        return cls(path, force)

    def __str__(self) -> str:
        return "standard output" if self.path is None else str(self.path)

    def write(self, text: str) -> None:
        try:
            if self.path is None:
                sys.stdout.flush()
                sys.stdout.buffer.write(text.encode("utf-8"))  # UTF-8 whatever the locale, as a file would be
                sys.stdout.buffer.flush()
            elif self.force:
                write_atomically(self.path, text)
            else:
                write_new_atomically(self.path, text)
        except FileExistsError:
            raise DestinationError(
                f"--out {self.path} was created by something else during the run: nothing written; "
                "give --force to replace it, or another --out"
            ) from None
        except OSError as error:
            raise DestinationError(f"could not write to {self}: {error.strerror or error}") from None
