"""Files the tools write: whole or not at all, and no temporary file left behind when that fails."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then replace `path` in one step: a
    crash leaves the old content or the new, never half of one. The file gets the mode a plain
    write would give it (the old file's, or the umask's), not the temporary file's private one."""
    _write_then_put(path, text, os.replace)


def write_new_atomically(path: Path, text: str) -> None:
    """`write_atomically`, but never over a file: FileExistsError (and nothing written) when `path`
    exists, even when another process created it a moment before."""
    _write_then_put(path, text, _link_new)


def _write_then_put(path: Path, text: str, put: Callable[[str, Path], None]) -> None:
    file = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(file.name, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)
        put(file.name, path)
    except BaseException:  # a failed write, a failed replace, Ctrl-C: the temporary file goes too
        with contextlib.suppress(OSError):
            os.unlink(file.name)
        raise


def _link_new(temporary: str, path: Path) -> None:
    try:
        os.link(temporary, path)  # fails with FileExistsError when path exists, in one step
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then replace (a narrow race remains)
        if path.exists():
            raise FileExistsError(f"{path} exists") from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread writes
    os.umask(mask)
    return mask


_UMASK = _read_umask()
