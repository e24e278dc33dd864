"""The report's calibration figures (metrics.calibration): held to a computation by hand on small
tables, and to scikit-learn's `calibration_curve` and a direct numpy computation on larger ones."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from taskrouter.evaluation.calibration import aurc, calibration, reliability_bins, scored_turns, ties
from taskrouter.evaluation.report import write_report
from taskrouter.evaluation.runner import measure


def turn(confidence, primary, expected, event="start", **fields) -> dict:
    """A decided turn whose primary answered `primary` (None: no task) with `confidence`."""
    return {
        "conversation": "c", "index": 0, "expected": {"task": expected, "event": event},
        "predicted": {"task": primary, "event": event}, "backend": "sagemaker", "fallback_reason": None,
        "latency_ms": 1.0, "status": 200, "confidence": confidence, "primary_task": primary,
    } | fields  # fmt: skip


# A table small enough to work out by hand: right (R) and wrong (W) answers by confidence.
#   0.9 R, 0.9 W (a tie), 0.7 R, 0.6 W, 0.4 R
HAND = [
    turn(0.9, "follow_up_email", "follow_up_email"),
    turn(0.9, "qualify_lead", "follow_up_email"),
    turn(0.7, None, None, "none"),  # no task, expected no task: right
    turn(0.6, None, "follow_up_email"),
    turn(0.4, "qualify_lead", "qualify_lead", "continue"),
]


def test_the_risk_coverage_curve_by_hand():
    curve = calibration(HAND)["risk_coverage"]
    # threshold, kept, coverage, accuracy of the kept, escalated share
    assert [(p["threshold"], p["kept"], p["coverage"], p["accuracy"], p["escalated"]) for p in curve] == [
        (0.9, 2, 2 / 5, 1 / 2, 3 / 5),
        (0.7, 3, 3 / 5, 2 / 3, 2 / 5),
        (0.6, 4, 4 / 5, 2 / 4, 1 / 5),
        (0.4, 5, 1.0, 3 / 5, 0.0),
    ]


def test_the_aurc_by_hand_with_a_tie_taken_at_its_expected_risk():
    # k = 1 and 2 fall in the 0.9 tie (1 wrong of 2): expected risks 1/2 and 1/2; then 1/3, 2/4, 2/5
    assert calibration(HAND)["aurc"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3 + 2 / 4 + 2 / 5) / 5)


def test_the_aurc_of_a_tie_is_the_mean_over_every_order_of_its_turns():
    """Independent of how the report orders equal confidences: the mean of the plain AURC over all
    orders within the ties, enumerated."""
    confidences = [0.5, 0.9, 0.3, 0.9, 0.5, 0.9, 0.8, 0.3]
    right = [False, True, True, False, True, False, True, False]  # every tie mixes right and wrong
    groups = [[r for c, r in zip(confidences, right) if c == level] for level in sorted(set(confidences), reverse=True)]
    areas = []
    for orders in itertools.product(*(set(itertools.permutations(group)) for group in groups)):
        wrong = np.array([not r for order in orders for r in order])
        areas.append(np.mean(np.cumsum(wrong) / np.arange(1, len(wrong) + 1)))
    scored = [turn(c, "follow_up_email" if r else None, "follow_up_email") for c, r in zip(confidences, right)]
    assert calibration(scored)["aurc"] == pytest.approx(float(np.mean(areas)))
    assert calibration(list(reversed(scored)))["aurc"] == calibration(scored)["aurc"]


def test_the_aurc_without_ties_is_the_mean_risk_of_the_k_most_confident():
    rng = np.random.default_rng(3)
    confidence = rng.random(500)
    right = rng.random(500) < confidence  # calibrated by construction
    ranked = scored_turns([turn(float(c), "a_task" if r else None, "a_task") for c, r in zip(confidence, right)])
    wrong = ~right[np.argsort(-confidence)]
    assert aurc(ties(ranked)) == pytest.approx(float(np.mean(np.cumsum(wrong) / np.arange(1, 501))))


def test_the_ece_by_hand():
    # bins of width 1/15: 0.9 (two turns, 1 right) in (0.8667, 0.9333]; 0.7 in (0.6667, 0.7333];
    # 0.6 in (0.5333, 0.6]; 0.4 in (0.3333, 0.4]: |accuracy - confidence| weighted by the bin's turns
    expected = (2 * abs(0.5 - 0.9) + abs(1 - 0.7) + abs(0 - 0.6) + abs(1 - 0.4)) / 5
    assert calibration(HAND)["ece"] == pytest.approx(expected)


def test_the_bins_are_scikit_learns_even_on_their_edges():
    """calibration_curve (15 uniform bins) gives each non-empty bin's accuracy and mean confidence;
    the confidences include 0, 1 and every edge k/15, which belong to the bin below."""
    rng = np.random.default_rng(11)
    confidence = np.concatenate([rng.random(300), np.arange(16) / 15, [0.0, 1.0]])
    right = rng.random(len(confidence)) < confidence
    binned = reliability_bins(scored_turns([turn(float(c), "a_task" if r else None, "a_task") for c, r in zip(confidence, right)]))
    accuracy, mean_confidence = calibration_curve(right, confidence, n_bins=15, strategy="uniform")
    filled = [b.as_json() for b in binned if b.count]
    assert [b["accuracy"] for b in filled] == pytest.approx(list(accuracy))
    assert [b["confidence"] for b in filled] == pytest.approx(list(mean_confidence))
    assert sum(b.count for b in binned) == len(confidence)
    counts = np.array([b.count for b in binned if b.count])
    ece = calibration([turn(float(c), "a_task" if r else None, "a_task") for c, r in zip(confidence, right)])["ece"]
    assert ece == pytest.approx(float(np.sum(counts / len(confidence) * np.abs(accuracy - mean_confidence))))


def test_each_coverage_row_is_the_highest_threshold_keeping_at_least_that_share():
    rows = {row["target"]: row for row in calibration(HAND)["at_coverage"]}
    assert (rows[1.0]["threshold"], rows[1.0]["kept"]) == (0.4, 5)
    assert (rows[0.6]["threshold"], rows[0.6]["kept"]) == (0.7, 3)
    assert (rows[0.5]["threshold"], rows[0.5]["kept"]) == (0.7, 3)  # 0.9 keeps 2 of 5, under half
    assert (rows[0.1]["threshold"], rows[0.1]["coverage"]) == (0.9, 0.4)  # a tie keeps more than asked


def test_a_confidently_wrong_event_shows_in_the_per_event_table():
    """Continue turns answered wrong at 0.95 while the others are right at lower confidences: the
    overall accuracy at 50 % coverage hides it less than the continue column does."""
    turns = [turn(0.95, None, "follow_up_email", "continue") for _ in range(4)]
    turns += [turn(0.9 - i / 100, "follow_up_email", "follow_up_email", "start") for i in range(12)]
    turns += [turn(0.5, "follow_up_email", "follow_up_email", "continue") for _ in range(4)]
    figures = calibration(turns)
    half = next(row for row in figures["at_coverage"] if row["target"] == 0.5)
    assert half["accuracy"] == pytest.approx(6 / 10)
    assert half["by_event"]["continue"] == {"answered": 8, "kept": 4, "accuracy": 0.0}
    assert half["by_event"]["start"] == {"answered": 12, "kept": 6, "accuracy": 1.0}
    assert figures["by_event"]["continue"]["accuracy"] == 0.5 and figures["by_event"]["continue"]["aurc"] > 0.8
    assert figures["by_event"]["start"]["aurc"] == 0.0


def test_only_turns_with_the_primarys_answer_and_confidence_count():
    turns = [
        turn(0.8, "follow_up_email", "follow_up_email"),
        turn(None, None, "follow_up_email"),  # the primary gave no answer
        {k: v for k, v in turn(0.3, None, None).items() if k != "primary_task"},  # escalated: a URL target hides it
        turn(0.9, None, None, status=503, error="no_backend_available"),  # an error turn
        {k: v for k, v in turn(0.5, None, None).items() if k not in ("confidence", "primary_task")},  # an older report's
    ]
    figures = calibration(turns)
    assert (figures["answered"], figures["accuracy"], figures["aurc"]) == (1, 1.0, 0.0)


def test_no_answered_turn_gives_figures_of_none_and_a_report_that_says_so(tmp_path):
    turns = [{k: v for k, v in turn(None, None, None).items() if k != "primary_task"}]
    metrics = measure(turns)
    assert metrics["calibration"] == {"answered": 0, "accuracy": None, "aurc": None, "ece": None, "bins": [],
                                      "risk_coverage": [], "at_coverage": [], "by_event": {}}  # fmt: skip
    report = {"dataset": "set.jsonl", "target": "local", "strategy": "zero_shot", "concurrency": 1, "turn_timeout_s": 15.0,
              "dataset_sha256": "0" * 64, "tasks_sha256": None, "turns": turns, "metrics": metrics}  # fmt: skip
    write_report(report, tmp_path)
    assert "nothing to calibrate" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_writes_the_calibration_section_and_the_reliability_diagram(tmp_path):
    report = {"dataset": "set.jsonl", "target": "local", "strategy": "zero_shot", "concurrency": 1, "turn_timeout_s": 15.0,
              "dataset_sha256": "0" * 64, "tasks_sha256": None, "turns": HAND, "metrics": measure(HAND)}  # fmt: skip
    write_report(report, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "| coverage asked | threshold | kept | coverage | accuracy of kept | escalated | continue | none | start |" in markdown
    assert "| 60% | 0.7 | 3 | 0.600 | 0.667 | 0.400 | — (0/1) | 1.000 (1/1) | 0.500 (2/3) |" in markdown
    assert "| expected event | answered | accuracy | AURC | ECE |" in markdown
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["metrics"]["calibration"]["aurc"] == pytest.approx(calibration(HAND)["aurc"])
