"""--out's adapter is replaced so that a crash at any point of the moves leaves the files of one
adapter only, and manifest.json only beside a whole one (no training: plain files stand in)."""

from __future__ import annotations

import os
import re
from contextlib import suppress
from pathlib import Path

import pytest

from taskrouter.training import output
from taskrouter.training.output import ADAPTER_FILES, ARCHIVE, MANIFEST, OutputError, check_output, staged


def write_adapter(folder: Path, generation: str, *, archive: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        if archive or name != ARCHIVE:
            (folder / name).write_text(generation)


@pytest.mark.parametrize("moves_done", range(len(ADAPTER_FILES) + 1))  # the last: no crash
@pytest.mark.parametrize("archive", [True, False], ids=["archive", "no-archive"])
def test_a_crash_among_the_moves_leaves_one_adapter_s_files(tmp_path, monkeypatch, moves_done, archive):
    out = tmp_path / "out"
    write_adapter(out, "old")
    real_replace, moves = os.replace, []

    def crash_after_some(source, target):
        if len(moves) == moves_done:
            raise OSError("killed")
        moves.append(target)
        real_replace(source, target)

    monkeypatch.setattr(output.os, "replace", crash_after_some)
    with suppress(OSError), staged(out) as folder:
        write_adapter(folder, "new", archive=archive)
    left = {path.name: path.read_text() for path in out.iterdir()}
    assert len(set(left.values())) <= 1, left  # never an old archive beside new weights, nor the reverse
    assert MANIFEST not in left or set(left) == set(ADAPTER_FILES) - ({ARCHIVE} if not archive else set())


def test_a_whole_run_replaces_every_file_and_leaves_no_staging(tmp_path):
    out = tmp_path / "out"
    write_adapter(out, "old")
    (out / "notes.txt").write_text("mine")
    with staged(out) as folder:
        write_adapter(folder, "new", archive=False)
    assert {path.name: path.read_text() for path in out.iterdir()} == {
        **{name: "new" for name in ADAPTER_FILES if name != ARCHIVE}, "notes.txt": "mine"
    }


def test_a_failed_run_leaves_no_folder_it_made(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError), staged(out) as folder:
        write_adapter(folder, "new")
        raise RuntimeError("the archive failed")
    assert not out.exists()


@pytest.mark.parametrize(("case", "message"), [
    ("a file", "is a file, not a folder"),
    ("under a file", "is a file, not a folder: give another --out"),
    ("an adapter", "holds an adapter already (manifest.json, adapter.tar.gz"),
    ("an adapter cut short", "holds an adapter already (adapter_config.json)"),
])
def test_an_out_that_cannot_take_the_adapter_is_refused(tmp_path, case, message):
    out = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "out"}.get(case, tmp_path / "out")
    (tmp_path / "file").write_text("mine")
    if case == "an adapter":
        write_adapter(out, "old")
    elif case == "an adapter cut short":
        out.mkdir()
        (out / "adapter_config.json").write_text("{}")
    with pytest.raises(OutputError, match=re.escape(message)):
        check_output(out, force=False)


def test_force_takes_a_folder_holding_an_adapter_and_an_empty_or_new_one_needs_none(tmp_path):
    write_adapter(tmp_path / "held", "old")
    check_output(tmp_path / "held", force=True)
    (tmp_path / "empty").mkdir()  # SageMaker's /opt/ml/model
    check_output(tmp_path / "empty", force=False)
    check_output(tmp_path / "to" / "make", force=False)
    assert not (tmp_path / "to").exists() and [p.name for p in (tmp_path / "empty").iterdir()] == []
