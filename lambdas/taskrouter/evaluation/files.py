"""Files the tools write: whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then replace `path` in one step: a
    crash leaves the old content or the new, never half of one. The file gets the mode a plain
    write would give it (the old file's, or the umask's), not the temporary file's private one."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False) as file:
        try:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
            os.chmod(file.name, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(file.name)
            raise
    os.replace(file.name, path)


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread writes
    os.umask(mask)
    return mask


_UMASK = _read_umask()
