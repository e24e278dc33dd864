"""`write_atomically` and `write_new_atomically` on a real file system: the whole new content or the
old, and never a temporary file left beside the target, whichever step fails."""

from __future__ import annotations

import errno
import os

import pytest

from taskrouter.evaluation.files import write_atomically, write_new_atomically


def test_a_write_replaces_the_whole_file_keeping_its_mode(tmp_path):
    target = tmp_path / "data.jsonl"
    target.write_text("old\n")
    target.chmod(0o640)
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["data.jsonl"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "data.jsonl"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(target, "a lone surrogate \ud800 cannot be UTF-8")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["data.jsonl"]


def test_a_failed_replace_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a-folder"
    (target / "inside").mkdir(parents=True)  # a folder, not empty: no file can replace it
    with pytest.raises(OSError):
        write_atomically(target, "new\n")
    assert os.listdir(tmp_path) == ["a-folder"]
    assert os.listdir(target) == ["inside"]


def test_a_new_file_never_replaces_one_that_exists(tmp_path):
    target = tmp_path / "data.jsonl"
    write_new_atomically(target, "first\n")
    assert target.read_text() == "first\n"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(FileExistsError):
        write_new_atomically(target, "second\n")
    assert target.read_text() == "first\n"
    assert os.listdir(tmp_path) == ["data.jsonl"]


def test_a_new_file_on_a_file_system_without_hard_links(tmp_path, monkeypatch):
    def no_hard_links(source: str, destination: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # what FAT and some network shares answer

    monkeypatch.setattr(os, "link", no_hard_links)
    target = tmp_path / "data.jsonl"
    write_new_atomically(target, "first\n")
    with pytest.raises(FileExistsError):
        write_new_atomically(target, "second\n")
    assert target.read_text() == "first\n"
    assert os.listdir(tmp_path) == ["data.jsonl"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
