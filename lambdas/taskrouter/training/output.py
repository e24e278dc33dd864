"""The folder `taskrouter adapter train` writes (`--out`): checked before any training, filled at its end.

The adapter, its archive and its manifest are saved to a staging folder inside the folder (the same
file system, so that each move is a rename: SageMaker's /opt/ml/model is a mount point, which no
folder could be renamed onto), then moved into place: a previous adapter's files are removed first,
manifest.json first of all, then the new ones moved in, manifest.json last. A crash at any point
leaves the files of one adapter only, never an archive beside weights it does not hold, and a
manifest.json only beside the whole adapter it describes.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "manifest.json"
ARCHIVE = "adapter.tar.gz"  # what SageMaker takes as an adapter's ArtifactUrl
# An adapter's files, in the order a replaced one loses them: its manifest first, then its archive.
ADAPTER_FILES = (MANIFEST, ARCHIVE, "adapter_model.safetensors", "adapter_config.json")


class OutputError(ValueError):
    """`--out` cannot take the adapter; the message says why and what to do (one line)."""


def check_output(out: Path, *, force: bool) -> None:
    """Refuses, before any training, a folder the adapter could not be written to: a file, a folder
    holding an adapter (unless `force`: it is replaced once the new one is trained), or one this
    process may not write (the folder, or where it would be created)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder: give a folder for the adapter")
    held = [name for name in ADAPTER_FILES if (out / name).exists()]
    if held and not force:
        raise OutputError(
            f"--out {out} holds an adapter already ({', '.join(held)}): give another --out, "
            "or add --force to replace it"
        )
    existing = next(folder for folder in (out, *out.parents) if folder.exists())
    if not existing.is_dir():
        raise OutputError(f"--out {out}: {existing} is a file, not a folder: give another --out")
    try:  # a folder made and removed: what os.access cannot tell (root, read-only or special file systems)
        tempfile.TemporaryDirectory(prefix=".adapter-probe-", dir=existing).cleanup()
    except OSError as error:
        raise OutputError(
            f"--out {out}: {existing} is not writable ({error.strerror}): give a folder you may write"
        ) from None


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A folder to save the adapter to; its files replace the adapter files of `out` when the block
    ends without an error, and are dropped when it raises (with `out` itself, when made for them)."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out))  # hidden, and unique to this run
    try:
        yield staging
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made and not any(out.iterdir()):
            out.rmdir()


def _publish(staging: Path, out: Path) -> None:
    files = sorted(staging.iterdir(), key=lambda file: (file.name == MANIFEST, file.name))  # the manifest last
    for file in files:  # on disk before the old adapter goes: a power cut never leaves empty files only
        with open(file, "rb") as written:
            os.fsync(written.fileno())
    with _ctrl_c_held():
        for name in ADAPTER_FILES:
            (out / name).unlink(missing_ok=True)
        for file in files:
            os.replace(file, out / file.name)


@contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Ctrl-C ignored for the milliseconds the files move: the adapter it would split is trained
    already, so the run ends as a whole one (a crash still leaves one adapter's files only)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
