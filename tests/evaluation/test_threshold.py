"""`taskrouter eval threshold`: the Wilson interval it judges by (held to SciPy's), the threshold it
picks for each goal, each of its refusals (one line, exit 2), and the lines it prints, read back by
TOML, JSON and the router's own reader of thresholds."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from scipy.stats import binomtest

from infra.config import ConfidenceConfig
from taskrouter.cli import main
from taskrouter.core.confidence import parse_thresholds
from taskrouter.evaluation.intervals import trials_for_lower_bound, wilson, z_score
from taskrouter.evaluation.threshold import shortest_between

DATASET_SHA256 = "d" * 64
TASKS_SHA256 = "e" * 64


def turn(confidence: float | None, right: bool, event: str = "start", **fields) -> dict:
    expected = "follow_up_email"
    primary = expected if right else None
    return {
        "conversation": "c", "index": 0, "expected": {"task": expected, "event": event},
        "predicted": {"task": primary, "event": event}, "backend": "sagemaker", "fallback_reason": None,
        "latency_ms": 1.0, "status": 200, "confidence": confidence, "primary_task": primary,
    } | fields  # fmt: skip


def write_run(tmp_path: Path, turns: list[dict], name: str = "run", **fields) -> str:
    report = {
        "dataset": "dev.jsonl", "target": "local", "strategy": "zero_shot", "concurrency": 1, "turn_timeout_s": 15.0,
        "dataset_sha256": DATASET_SHA256, "tasks_sha256": TASKS_SHA256, "turns": turns, "metrics": {},
    } | fields  # fmt: skip
    folder = tmp_path / name
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    return str(folder)


def threshold(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["eval", "threshold", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, *args: str, code: int = 2) -> str:
    got, out, err = threshold(capsys, *args)
    assert (got, out) == (code, ""), err
    assert err.count("\n") == 1 and err.startswith("taskrouter eval threshold: ") and "Traceback" not in err, err
    return err


def entry_of(out: str, stage: str = "dev") -> dict:
    """The one threshold the printed stages.toml lines hold, in the stage's table as infra/stages.toml
    has it (read by the stage's own configuration), checked equal to the environment line's."""
    lines = out.splitlines()
    start = lines.index("thresholds = [")
    assert lines[start - 1].startswith(f"infra/stages.toml, in [{stage}.confidence] ")
    table = "\n".join([f"[{stage}.confidence]", *lines[start : start + 3], "planned_escalated_share = 0.05"])
    settings = tomllib.loads(table)[stage]["confidence"]
    (entry,) = settings["thresholds"]
    ConfidenceConfig.model_validate(settings)
    variable = next(line for line in lines if line.startswith("TASKROUTER_CONFIDENCE_THRESHOLDS='"))
    assert json.loads(variable.removeprefix("TASKROUTER_CONFIDENCE_THRESHOLDS='").removesuffix("'")) == [entry]
    return entry


# -- the interval --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("successes", "trials"), [(0, 1), (1, 1), (7, 10), (35, 35), (90, 100), (3, 250), (800, 1000)])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_the_wilson_interval_is_scipys(successes, trials, level):
    expected = binomtest(successes, trials).proportion_ci(confidence_level=level, method="wilson")
    interval = wilson(successes, trials, level)
    assert (interval.low, interval.high) == (pytest.approx(expected.low, abs=1e-12), pytest.approx(expected.high, abs=1e-12))
    assert interval.estimate == successes / trials


@pytest.mark.parametrize(("target", "needed"), [(0.8, 16), (0.9, 35), (0.95, 73), (0.99, 381)])
def test_the_turns_an_accuracy_needs_are_the_fewest_whose_all_right_lower_bound_reaches_it(target, needed):
    # n of n right: the Wilson lower bound is n / (n + z²), so n ≥ target·z² / (1 − target)
    assert trials_for_lower_bound(target, 0.95) == needed == math.ceil(target * z_score(0.95) ** 2 / (1 - target))
    assert wilson(needed, needed, 0.95).low >= target > wilson(needed - 1, needed - 1, 0.95).low


def test_the_printed_threshold_is_the_shortest_number_keeping_the_same_turns():
    assert shortest_between(0.61, 0.6235123) == 0.62
    assert shortest_between(0.6234, 0.6235123) == 0.6235
    assert shortest_between(0.0, 0.35) == 0.3
    assert shortest_between(0.299999, 0.3) == 0.3
    for lower, upper in [(0.1234567, 0.1234568), (0.98, 0.99999), (1e-9, 2e-9)]:
        chosen = shortest_between(lower, upper)
        assert lower < chosen <= upper


# -- the choices -------------------------------------------------------------------------------------
def test_for_an_accuracy_the_lowest_threshold_whose_lower_bound_reaches_it(tmp_path, capsys):
    # 40 right from 0.99 down to 0.60, then at 0.55 4 wrong in 6, then 20 right from 0.5 down, 10 wrong at 0.1
    turns = [turn(0.99 - i / 100, True) for i in range(40)]
    turns += [turn(0.55, i >= 4) for i in range(6)]
    turns += [turn(0.5 - i / 100, True) for i in range(20)]
    turns += [turn(0.1, False) for _ in range(10)]
    run = write_run(tmp_path, turns)
    code, out, err = threshold(capsys, run, "--accuracy", "0.85")
    assert code == 0, err
    entry = entry_of(out)
    # keeping down to 0.31 keeps 62 right of 66; 0.1 would add 10 wrong. The threshold printed is the
    # shortest number over 0.1 and at most 0.31: 0.3
    assert wilson(62, 66, 0.95).low >= 0.85 > wilson(62, 76, 0.95).low
    assert entry == {"strategy": "zero_shot", "adapter": "base", "threshold": 0.3, "tasks_sha256": TASKS_SHA256}
    assert "keeps 66 of 76 answered turns" in out
    low, high = wilson(62, 66, 0.95).low, wilson(62, 66, 0.95).high
    assert f"expected accuracy of the kept turns {62 / 66:.3f} (95 % Wilson interval {low:.3f}–{high:.3f})" in out
    escalated = wilson(10, 76, 0.95)
    assert f"escalated share {10 / 76:.3f} of the answered turns (95 % Wilson interval {escalated.low:.3f}–" in out


def test_for_a_most_escalated_share_the_highest_threshold_within_it(tmp_path, capsys):
    turns = [turn(1 - i / 100, i % 3 != 0) for i in range(100)]  # 1.00, 0.99, ... 0.01
    code, out, err = threshold(capsys, write_run(tmp_path, turns), "--max-escalated", "0.29")
    assert code == 0, err
    # 29 escalated: those under 0.3 (0.29 ... 0.01), though 0.29 × 100 is 28.999… in floating point
    assert entry_of(out)["threshold"] == 0.3 and "keeps 71 of 100 answered turns" in out


def test_ties_are_kept_or_escalated_together(tmp_path, capsys):
    turns = [turn(0.9, True) for _ in range(30)] + [turn(0.5, True) for _ in range(40)] + [turn(0.2, False) for _ in range(30)]
    code, out, _ = threshold(capsys, write_run(tmp_path, turns), "--max-escalated", "0.5")
    # escalating at 0.5 would escalate 30 (under half); at 0.9, 70 (over): the tie at 0.5 is kept whole
    assert code == 0 and entry_of(out)["threshold"] == 0.5 and "keeps 70 of 100" in out


def test_a_run_without_a_strategy_needs_it_given_and_another_strategy_is_refused(tmp_path, capsys):
    turns = [turn(0.9, True) for _ in range(40)]
    default = write_run(tmp_path, turns, "default", strategy="target default")
    assert "give --strategy" in refused(capsys, default, "--accuracy", "0.8")
    code, out, _ = threshold(capsys, default, "--accuracy", "0.8", "--strategy", "few_shot_cot")
    assert code == 0 and entry_of(out)["strategy"] == "few_shot_cot"
    err = refused(capsys, write_run(tmp_path, turns), "--accuracy", "0.8", "--strategy", "react")
    assert "routed with zero_shot, not react" in err


def test_the_lines_name_the_stage_and_the_routers_reader_takes_them(tmp_path, capsys):
    code, out, _ = threshold(capsys, write_run(tmp_path, [turn(0.9, True) for _ in range(40)]), "--accuracy", "0.8",
                             "--stage", "prod", "--adapter", "sales-router-v2")  # fmt: skip
    entry = entry_of(out, "prod")
    assert code == 0 and entry["adapter"] == "sales-router-v2"
    variable = next(line for line in out.splitlines() if line.startswith("TASKROUTER_CONFIDENCE_THRESHOLDS="))
    (parsed,) = parse_thresholds(variable.partition("=")[2].strip("'"))
    assert (parsed.strategy.value, parsed.adapter, parsed.threshold, parsed.tasks_sha256) == tuple(entry.values())


# -- the adapter -------------------------------------------------------------------------------------
def trained_adapter(tmp_path: Path, folder_name: str, dataset_sha256: str, **fields) -> Path:
    """A folder as `taskrouter adapter train` leaves it: its manifest records the training dataset."""
    folder = tmp_path / folder_name
    folder.mkdir()
    manifest = {"base_model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "0" * 40},
                "dataset": {"file": "train.jsonl", "sha256": dataset_sha256}} | fields  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_an_adapter_folder_names_the_adapter_and_refuses_a_run_over_its_training_data(tmp_path, capsys, monkeypatch):
    run = write_run(tmp_path, [turn(0.9, True) for _ in range(40)])
    unseen = trained_adapter(tmp_path, "sales-router-v2", "f" * 64)
    code, out, _ = threshold(capsys, run, "--accuracy", "0.8", "--adapter", str(unseen))
    assert code == 0 and entry_of(out)["adapter"] == "sales-router-v2"  # adapter train names none: its folder does
    named = trained_adapter(tmp_path, "checkout", "f" * 64, name="sales-router-v3")
    code, out, _ = threshold(capsys, run, "--accuracy", "0.8", "--adapter", str(named))
    assert code == 0 and entry_of(out)["adapter"] == "sales-router-v3"
    stage_manifest = tmp_path / "sales-router-v4.json"  # a stage's manifest file, model_artifacts/adapters/NAME.json
    stage_manifest.write_text(json.dumps({"name": "sales-router-v4", "adapter": {"method": "lora", "rank": 16}}))
    code, out, _ = threshold(capsys, run, "--accuracy", "0.8", "--adapter", str(stage_manifest))
    assert code == 0 and entry_of(out)["adapter"] == "sales-router-v4"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()  # `base` is the base model's name wherever the command runs
    code, out, _ = threshold(capsys, run, "--accuracy", "0.8", "--adapter", "base")
    assert code == 0 and entry_of(out)["adapter"] == "base"
    trained_on_it = trained_adapter(tmp_path, "overfit", DATASET_SHA256)
    err = refused(capsys, run, "--accuracy", "0.8", "--adapter", str(trained_on_it))
    assert "is the one" in err and "was trained on" in err and "training never saw" in err


@pytest.mark.parametrize("value", ["Sales_Router", "x" * 80 + "!"])
def test_an_adapter_that_is_no_name_nor_a_folder_is_an_error(tmp_path, capsys, value):
    run = write_run(tmp_path, [turn(0.9, True) for _ in range(40)])
    assert f"--adapter {value!r}" in refused(capsys, run, "--accuracy", "0.8", "--adapter", value, code=1)


# -- the refusals ------------------------------------------------------------------------------------
def test_too_few_answered_turns_for_the_accuracy_is_refused_with_the_number_needed(tmp_path, capsys):
    err = refused(capsys, write_run(tmp_path, [turn(0.9, True) for _ in range(34)]), "--accuracy", "0.9")
    assert "34 answered turns" in err and "needs at least 35" in err


def test_too_few_answered_turns_for_the_share_is_refused_with_the_number_needed(tmp_path, capsys):
    err = refused(capsys, write_run(tmp_path, [turn(0.9, True) for _ in range(99)]), "--max-escalated", "0.1")
    assert "99 answered turns" in err and "needs at least 100" in err  # 10 / min(0.1, 0.9)


def test_no_threshold_reaching_the_accuracy_is_refused_with_the_best(tmp_path, capsys):
    turns = [turn(1 - i / 100, i % 4 != 0) for i in range(80)]  # a quarter wrong at every confidence
    err = refused(capsys, write_run(tmp_path, turns), "--accuracy", "0.9")
    assert "no threshold keeps turns whose accuracy is at least 0.9" in err and "the best" in err


@pytest.mark.parametrize(
    "turns",
    [
        [{k: v for k, v in turn(0.9, True).items() if k not in ("confidence", "primary_task")}] * 50,  # an older report
        [turn(None, True)] * 50,  # a primary that gives no confidence
        [{k: v for k, v in turn(0.9, True, backend="openai").items() if k != "primary_task"}] * 50,  # the fallback's
    ],
    ids=["older-report", "no-confidence", "primary-answer-unknown"],
)
def test_a_run_without_confidences_is_refused(tmp_path, capsys, turns):
    err = refused(capsys, write_run(tmp_path, turns), "--max-escalated", "0.2")
    assert "no turn holds the primary's confidence with its answer (of 50 turns)" in err


def test_a_run_whose_task_list_was_not_known_is_refused(tmp_path, capsys):
    err = refused(capsys, write_run(tmp_path, [turn(0.9, True)] * 40, tasks_sha256=None), "--accuracy", "0.8")
    assert "tasks_sha256 is null" in err


def test_a_report_that_is_missing_or_malformed_is_an_error_naming_it(tmp_path, capsys):
    assert "report.json: not an evaluation's report" in refused(capsys, str(tmp_path / "absent"), "--accuracy", "0.8", code=1)
    bad = write_run(tmp_path, [turn(0.9, True), turn(1.5, True)])
    assert "turns[1].confidence: not a number from 0 to 1" in refused(capsys, bad, "--accuracy", "0.8", code=1)


@pytest.mark.parametrize(
    "args",
    [["--accuracy", "1"], ["--accuracy", "0"], ["--accuracy", "nan"], ["--max-escalated", "1.5"], ["--accuracy", "0.9", "--max-escalated", "0.1"],
     [], ["--accuracy", "0.9", "--level", "1"], ["--accuracy", "0.9", "--stage", "dev.confidence"]],
)  # fmt: skip
def test_command_line_mistakes_are_usage_errors(tmp_path, capsys, args):
    refused(capsys, write_run(tmp_path, [turn(0.9, True)] * 40), *args)
