"""`taskrouter review`'s command line: what it cannot start with is one line on stderr that names the
flag or file and the fix, and a non-zero exit (2 for a usage error, 1 otherwise), never a traceback."""

from __future__ import annotations

import socket

import pytest

from taskrouter.cli import main

from .reviewing import ROOT, example_copy


def error_of(capsys, *args: str) -> tuple[int, str]:
    """The exit code and the one line that `taskrouter review ARGS` prints, after checking it is one."""
    try:
        code = main(["review", *args])
    except SystemExit as exit_:  # what the console script would exit with
        code = exit_.code
    captured = capsys.readouterr()
    assert code not in (0, None) and captured.out == "", (code, captured)
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n"), captured.err
    assert captured.err.startswith("taskrouter review: "), captured.err
    return code, captured.err.removesuffix("\n")


@pytest.mark.parametrize("port", ["abc", "70000", "-1", "8080.5"])
def test_a_port_that_is_not_one_is_a_usage_error(capsys, tmp_path, port):
    code, line = error_of(capsys, str(example_copy(tmp_path)), "--port", port)
    assert code == 2
    assert "--port" in line and "65535" in line


def test_a_port_in_use_is_told_with_the_fix(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, line = error_of(capsys, str(example_copy(tmp_path)), "--port", str(port))
    assert code == 1
    assert f"--port {port}" in line and "in use" in line and "leave --port out" in line


def test_a_folder_or_a_missing_file_is_told_with_the_fix(capsys, tmp_path):
    dataset = example_copy(tmp_path)
    code, line = error_of(capsys, str(tmp_path))
    assert code == 1
    assert f"FILE {tmp_path}: a folder" in line and ".jsonl" in line
    code, line = error_of(capsys, str(tmp_path / "absent.jsonl"))
    assert code == 1
    assert "absent.jsonl: no such file" in line
    code, line = error_of(capsys, str(dataset), "--tasks", str(tmp_path))
    assert code == 1
    assert f"--tasks {tmp_path}: a folder" in line
    code, line = error_of(capsys, str(dataset), "--reviewed", str(tmp_path))
    assert code == 1
    assert f"--reviewed {tmp_path}: a folder" in line
    code, line = error_of(capsys, str(dataset), "--tasks", str(ROOT / "datasets" / "example.jsonl"))
    assert code == 1
    assert "--tasks" in line
