"""`taskrouter eval compare`: the table, and a gate that compares only what can be compared and
refuses, in one line, what it cannot judge."""

from __future__ import annotations

import json
import math

import pytest

from taskrouter.cli import main
from taskrouter.core.events import derive_event
from taskrouter.evaluation.runner import measure

DATASET_SHA256 = "a" * 64
TASKS_SHA256 = "b" * 64
WRONG = "qualify_lead"


def turn(expected: str | None, predicted: str | None) -> dict:
    return {
        "conversation": "c", "index": 0,
        "expected": {"task": expected, "event": derive_event(None, expected)},
        "predicted": {"task": predicted, "event": derive_event(None, predicted)},
        "backend": "sagemaker", "fallback_reason": None, "latency_ms": 12.5, "status": 200,
    }  # fmt: skip


def write_run(tmp_path, name: str, *, wrong: int = 0, **fields) -> str:
    """A run over 10 turns (5 follow_up_email, 5 none), `wrong` of the none ones answered WRONG."""
    turns = [turn("follow_up_email", "follow_up_email") for _ in range(5)]
    turns += [turn(None, WRONG if i < wrong else None) for i in range(5)]
    report = {
        "dataset": "set.jsonl", "target": "local", "strategy": "target default", "concurrency": 1,
        "dataset_sha256": DATASET_SHA256, "tasks_sha256": TASKS_SHA256, "turns": turns, "metrics": measure(turns),
    } | fields  # fmt: skip
    folder = tmp_path / name
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    return str(folder)


def compare(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["eval", "compare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    return err


def test_a_run_within_the_tolerance_passes_and_one_past_it_is_named(tmp_path, capsys):
    baseline, same, worse = write_run(tmp_path, "base"), write_run(tmp_path, "same"), write_run(tmp_path, "worse", wrong=1)
    assert compare(capsys, same, "--gate", baseline)[0] == 0
    code, _, err = compare(capsys, same, worse, "--gate", baseline)
    assert code == 1 and "worse: task accuracy 0.900 is below the baseline's 1.000" in err and "same" not in err
    assert compare(capsys, worse, "--gate", baseline, "--tolerance", "0.25")[0] == 0


def test_runs_over_another_dataset_are_refused(tmp_path, capsys):
    baseline, other = write_run(tmp_path, "base"), write_run(tmp_path, "other", dataset_sha256="c" * 64)
    code, _, err = compare(capsys, other, "--gate", baseline)
    assert code == 1
    assert "other: its dataset (sha256 cccccccccccc…) is not the baseline's (aaaaaaaaaaaa…)" in one_line(err)


@pytest.mark.parametrize("missing", ["dataset_sha256", "tasks_sha256"])
@pytest.mark.parametrize(("older", "fix"), [("base", "re-run the baseline"), ("run", "re-run it")])
def test_a_report_without_digests_is_refused_with_the_fix(tmp_path, capsys, missing, older, fix):
    baseline, run = write_run(tmp_path, "base"), write_run(tmp_path, "run")
    path = tmp_path / older / "report.json"
    report = json.loads(path.read_text())
    del report[missing]
    path.write_text(json.dumps(report))
    code, _, err = compare(capsys, run, "--gate", baseline)
    assert code == 1 and f"{older}: " in err and fix in one_line(err) and missing in err


def test_strategies_may_differ_and_the_table_shows_them(tmp_path, capsys):
    baseline = write_run(tmp_path, "base", strategy="zero_shot")
    react = write_run(tmp_path, "react", strategy="react")
    code, out, _ = compare(capsys, baseline, react, "--gate", baseline)
    assert code == 0
    header, _, *rows = out.splitlines()
    column = header.split(" | ").index("strategy")
    assert [row.split(" | ")[column] for row in rows] == ["zero_shot", "react"]


@pytest.mark.parametrize(
    ("where", "value", "said"),
    [
        (("task", "accuracy"), math.nan, "task accuracy is nan, not a finite number"),
        (("task", "accuracy"), math.inf, "task accuracy is inf, not a finite number"),
        (("task", "per_class", "none"), None, "recall of none is missing"),
    ],
)
@pytest.mark.parametrize("in_baseline", [True, False])
def test_a_gated_metric_missing_or_not_finite_is_refused(tmp_path, capsys, where, value, said, in_baseline):
    baseline, run = write_run(tmp_path, "base"), write_run(tmp_path, "run")
    path = tmp_path / ("base" if in_baseline else "run") / "report.json"
    report = json.loads(path.read_text())
    parent = report["metrics"]
    for key in where[:-1]:
        parent = parent[key]
    if value is None:
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    path.write_text(json.dumps(report))
    code, out, err = compare(capsys, run, "--gate", baseline)
    assert code == 1 and f"{'base' if in_baseline else 'run'}: {said}" in err and "Traceback" not in err


@pytest.mark.parametrize("tolerance", ["-0.01", "nan", "inf", "-inf"])
def test_a_tolerance_negative_or_not_finite_is_refused(tmp_path, capsys, tolerance):
    baseline = write_run(tmp_path, "base")
    code, out, err = compare(capsys, write_run(tmp_path, "run", wrong=5), "--gate", baseline, f"--tolerance={tolerance}")
    assert (code, out) == (1, "")
    assert one_line(err).startswith(f"taskrouter eval compare: --tolerance {tolerance}: ")


def test_a_tolerance_that_is_no_number_is_a_usage_error(tmp_path, capsys):
    code, out, err = compare(capsys, write_run(tmp_path, "run"), "--tolerance", "a lot")
    assert (code, out) == (2, "") and "--tolerance" in one_line(err)


@pytest.mark.parametrize("value", ["0.9", True, [0.9], {"value": 0.9}])
def test_a_malformed_metric_is_one_line(tmp_path, capsys, value):
    run = write_run(tmp_path, "run")
    path = tmp_path / "run" / "report.json"
    report = json.loads(path.read_text())
    report["metrics"]["fallback_rate"] = value
    path.write_text(json.dumps(report))
    code, out, err = compare(capsys, run)
    assert (code, out) == (1, "")
    assert one_line(err).startswith(f"taskrouter eval compare: {run}/report.json: metrics.fallback_rate is ")


def test_out_dash_is_standard_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = write_run(tmp_path, "run")
    code, out, err = compare(capsys, run, "--out", "-")
    assert (code, err) == (0, "")
    assert out.startswith("| run |") and out.count("| run |") == 1  # the table once, on standard output
    assert not (tmp_path / "-").exists()


def labelled(running: str | None, expected: str | None, predicted: str | None) -> dict:
    return turn(expected, predicted) | {
        "expected": {"task": expected, "event": derive_event(running, expected)},
        "predicted": {"task": predicted, "event": derive_event(running, predicted)},
    }


def write_lifecycle_run(tmp_path, name: str, *, starts_right: int, continues_right: int) -> str:
    """10 starts (nothing running, follow_up_email expected), 10 continues (follow_up_email running and
    expected) and 2 turns no task fits; the wrong ones answer WRONG (a start of another task, or a switch)."""
    turns = [labelled(None, "follow_up_email", "follow_up_email" if i < starts_right else WRONG) for i in range(10)]
    turns += [labelled("follow_up_email", "follow_up_email", "follow_up_email" if i < continues_right else WRONG)
              for i in range(10)]
    turns += [labelled(None, None, None) for _ in range(2)]
    return write_run(tmp_path, name, turns=turns, metrics=measure(turns))


def test_a_candidate_whose_headline_rises_while_one_event_collapses_is_refused_naming_the_event(tmp_path, capsys):
    """The base copies the running task (continue right, start wrong); the candidate classifies the last
    message (start right, continue wrong): task accuracy 0.59 -> 0.64, continue recall 0.80 -> 0.20."""
    baseline = write_lifecycle_run(tmp_path, "base", starts_right=3, continues_right=8)
    candidate = write_lifecycle_run(tmp_path, "lora", starts_right=10, continues_right=2)
    code, _, err = compare(capsys, candidate, "--gate", baseline)
    assert code == 1
    assert "lora: recall of event continue 0.200 is below the baseline's 0.800 by more than 0.01" in err
    assert "task accuracy" not in err and "recall of event start" not in err
    assert compare(capsys, baseline, "--gate", baseline)[0] == 0


def test_a_report_without_an_event_s_recall_is_refused(tmp_path, capsys):
    baseline = write_lifecycle_run(tmp_path, "base", starts_right=5, continues_right=5)
    report = json.loads((tmp_path / "base" / "report.json").read_text())
    report["metrics"]["event"]["per_class"]["continue"]["recall"] = math.nan
    (tmp_path / "nan").mkdir()
    (tmp_path / "nan" / "report.json").write_text(json.dumps(report))
    code, _, err = compare(capsys, str(tmp_path / "nan"), "--gate", baseline)
    assert code == 1 and "recall of event continue is nan, not a finite number" in one_line(err)


# -- the primary's calibration -------------------------------------------------------------------
def calibrated_run(tmp_path, name: str, *, older: bool = False) -> str:
    """A run whose primary answered each turn with a confidence: right at 0.9 and 0.7, wrong at 0.8
    and 0.6. `older`: the same run as a report written before confidences (no calibration at all)."""
    answers = [(0.9, "follow_up_email"), (0.8, None), (0.7, "follow_up_email"), (0.6, None)]
    turns = [turn("follow_up_email", task) | {"confidence": c, "primary_task": task} for c, task in answers]
    metrics = measure(turns)
    if older:
        turns = [{k: v for k, v in t.items() if k not in ("confidence", "primary_task")} for t in turns]
        del metrics["calibration"]
    return write_run(tmp_path, name, turns=turns, metrics=metrics)


def test_the_table_shows_each_runs_aurc_and_ece_and_a_dash_for_an_older_report(tmp_path, capsys):
    calibrated, older = calibrated_run(tmp_path, "calibrated"), calibrated_run(tmp_path, "older", older=True)
    plain = write_run(tmp_path, "plain")  # a fresh report whose primary gave no confidence
    code, out, err = compare(capsys, calibrated, older, plain)
    assert (code, err) == (0, "")
    header, _, *rows = out.splitlines()
    columns = header.split(" | ")
    cells = [[row.split(" | ")[columns.index(name)] for name in ("AURC", "ECE")] for row in rows]
    # AURC: risks 0, 1/2, 1/3, 1/2 of the 1..4 most confident; ECE: |1-0.9|, |0-0.8|, |1-0.7|, |0-0.6|, a bin each
    assert cells[0] == [f"{(0 + 1 / 2 + 1 / 3 + 1 / 2) / 4:.4f}", f"{(0.1 + 0.8 + 0.3 + 0.6) / 4:.4f}"]
    assert cells[1] == cells[2] == ["—", "—"]


@pytest.mark.parametrize(("value", "said"), [("0.1", "metrics.calibration.aurc is a str"), ([], "metrics.calibration is a list")])
def test_a_malformed_calibration_is_one_line(tmp_path, capsys, value, said):
    run = calibrated_run(tmp_path, "run")
    path = tmp_path / "run" / "report.json"
    report = json.loads(path.read_text())
    if isinstance(value, list):
        report["metrics"]["calibration"] = value
    else:
        report["metrics"]["calibration"]["aurc"] = value
    path.write_text(json.dumps(report))
    code, out, err = compare(capsys, run)
    assert (code, out) == (1, "") and said in one_line(err)
