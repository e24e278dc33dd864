"""The report's pictures and tables stay readable and bounded whatever the labels; report.json keeps
everything."""

from __future__ import annotations

import json
import struct

from taskrouter.core.events import derive_event
from taskrouter.core.tasks import TASK_NAME_PATTERN
from taskrouter.evaluation.metrics import ERROR_LABEL
from taskrouter.evaluation.report import MAX_SHOWN_LABELS, OTHER_LABEL, shown_confusion, write_report
from taskrouter.evaluation.runner import measure

NAMES = [f"task_{number:03d}_{'x' * 50}" for number in range(100)]  # many labels, long ones


def record(expected: str | None, predicted: str | None, *, status: int = 200) -> dict:
    return {
        "conversation": "c", "index": 0,
        "expected": {"task": expected, "event": derive_event(None, expected)},
        "predicted": {"task": predicted, "event": derive_event(None, predicted) if status == 200 else None},
        "backend": "openai" if status == 200 else None, "fallback_reason": None, "latency_ms": 3.0, "status": status,
        **({} if status == 200 else {"error": "no_backend_available"}),
    }  # fmt: skip


def many_labels_report() -> dict:
    """Each task expected number+1 times (the later ones more frequent), one of them mistaken for the
    next task; a few turns with no answer."""
    turns = []
    for number, name in enumerate(NAMES):
        turns += [record(name, name) for _ in range(number)] + [record(name, NAMES[(number + 1) % len(NAMES)])]
    turns += [record(None, None), record(NAMES[0], None, status=503), record(None, None, status=503)]
    return {
        "dataset": "set.jsonl", "target": "local", "strategy": "target default", "concurrency": 1, "turns": turns,
        "metrics": measure(turns), "dataset_sha256": "0" * 64, "tasks_sha256": None, "turn_timeout_s": 15.0,
    }  # fmt: skip


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_the_pictures_and_tables_are_bounded_and_report_json_keeps_the_full_matrix(tmp_path):
    report = many_labels_report()
    write_report(report, tmp_path)
    full = json.loads((tmp_path / "report.json").read_text())["metrics"]["task"]["confusion"]
    assert len(full["labels"]) == 102 and full["labels"][-1] == ERROR_LABEL  # 100 tasks, none, the failures
    width, height = png_size(tmp_path / "confusion_task.png")
    assert width <= 1600 and height <= 1600, (width, height)
    markdown = (tmp_path / "report.md").read_text()
    matrix_header = next(line for line in markdown.splitlines() if line.startswith("| expected \\ predicted |") and OTHER_LABEL in line)
    assert matrix_header.count("|") - 1 <= MAX_SHOWN_LABELS + 3  # the row-label column, the labels, (other), (error)


def test_the_shown_matrix_keeps_the_most_frequent_labels_and_every_count():
    confusion = many_labels_report()["metrics"]["task"]["confusion"]
    shown = shown_confusion(confusion)
    labels = shown["labels"]
    assert labels[-2:] == [OTHER_LABEL, ERROR_LABEL] and len(labels) == MAX_SHOWN_LABELS + 2
    # none (whose recall the gate watches) always, then the most frequent: the later tasks
    assert labels[:-2] == sorted(["none", *NAMES[-(MAX_SHOWN_LABELS - 1):]])
    assert sum(map(sum, shown["matrix"])) == sum(map(sum, confusion["matrix"]))
    # the expected rows of the tasks folded into (other) keep their failures in the (error) column
    assert shown["matrix"][labels.index(OTHER_LABEL)][labels.index(ERROR_LABEL)] == 1
    for pseudo in (OTHER_LABEL, ERROR_LABEL):
        assert not TASK_NAME_PATTERN.fullmatch(pseudo)


def test_a_small_matrix_is_shown_whole():
    confusion = {"labels": ["follow_up_email", "none"], "matrix": [[2, 1], [0, 3]]}
    assert shown_confusion(confusion) == confusion
