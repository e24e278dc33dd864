"""How well the primary's confidence sorts its right answers from its wrong ones (docs/evaluation.md,
"Calibration"): the risk–coverage curve a threshold moves along, its area (AURC), the expected
calibration error (ECE) and the reliability bins, over all answered turns and per expected event.

A turn counts when the primary answered it: a confidence (not null) and the primary's own answer
known (`primary_task` in the turn record). It is right when that answer is the expected task (no task
is null on both sides). A threshold t keeps the turns whose confidence is at least t and escalates the
others, as the router does. The turns are sorted once; every figure is read off that order."""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from taskrouter.evaluation.metrics import failed

ECE_BINS = 15  # equal-width confidence bins of the ECE and the reliability diagram
COVERAGE_PERCENTS = (100, 90, 80, 70, 60, 50, 40, 30, 20, 10)  # report.md's table, and at_coverage


@dataclass(frozen=True)
class Scored:
    """One answered turn: the primary's confidence, whether its answer was right, the expected event."""

    confidence: float
    right: bool
    event: str


@dataclass(frozen=True)
class Point:
    """The turns a threshold keeps (confidence ≥ `threshold`) out of `answered`, and how many are right."""

    threshold: float
    kept: int
    right: int
    answered: int

    @property
    def coverage(self) -> float:
        return self.kept / self.answered

    @property
    def accuracy(self) -> float:
        return self.right / self.kept

    @property
    def escalated(self) -> float:
        """The share of the answered turns escalated: those under the threshold."""
        return (self.answered - self.kept) / self.answered

    def as_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "kept": self.kept, "coverage": self.coverage, "accuracy": self.accuracy,
                "escalated": self.escalated}  # fmt: skip


@dataclass(frozen=True)
class Tie:
    """The turns of one confidence, in the descending order: a threshold keeps all of them or none."""

    confidence: float
    size: int
    right: int


@dataclass(frozen=True)
class Bin:
    lower: float
    upper: float
    count: int
    confidence_sum: float
    right: int

    def as_json(self) -> dict[str, Any]:
        return {
            "lower": self.lower, "upper": self.upper, "count": self.count,
            "confidence": self.confidence_sum / self.count if self.count else None,
            "accuracy": self.right / self.count if self.count else None,
        }  # fmt: skip


def primary_answered(turn: dict[str, Any]) -> bool:
    """Whether a report's turn holds the primary's answer and its confidence (reports written before
    confidences hold neither)."""
    return not failed(turn) and turn.get("confidence") is not None and "primary_task" in turn


def scored_turns(turns: Iterable[dict[str, Any]]) -> list[Scored]:
    """The answered turns of a report, highest confidence first (the one sort every figure reads)."""
    scored = [
        Scored(float(t["confidence"]), t["primary_task"] == t["expected"]["task"], t["expected"]["event"])
        for t in turns
        if primary_answered(t)
    ]
    return sorted(scored, key=lambda s: -s.confidence)  # stable: equal confidences keep the report's order


def ties(ranked: Sequence[Scored]) -> list[Tie]:
    """`ranked` (highest confidence first) grouped by equal confidence."""
    return [
        Tie(confidence, len(group), sum(s.right for s in group))
        for confidence, group in ((c, list(g)) for c, g in itertools.groupby(ranked, key=lambda s: s.confidence))
    ]


def risk_coverage(grouped: Sequence[Tie]) -> list[Point]:
    """The curve at every distinct confidence as a threshold, highest first (coverage rising to 1)."""
    answered = sum(tie.size for tie in grouped)
    points, kept, right = [], 0, 0
    for tie in grouped:
        kept, right = kept + tie.size, right + tie.right
        points.append(Point(tie.confidence, kept, right, answered))
    return points


def aurc(grouped: Sequence[Tie]) -> float | None:
    """The area under the risk–coverage curve: the mean over k = 1..n of the risk (share wrong) of the
    k most confident turns. Within a tie the order is not the model's to give, so each k inside one
    takes the expected risk over the tie's orders: the turns before it, plus m/g of the tie's errors
    for the first m of its g turns. The area is then the same however the report orders equal
    confidences. None when no turn was answered."""
    total, kept, wrong = 0.0, 0, 0
    for tie in grouped:
        tie_wrong = tie.size - tie.right
        for m in range(1, tie.size + 1):
            total += (wrong + m * tie_wrong / tie.size) / (kept + m)
        kept, wrong = kept + tie.size, wrong + tie_wrong
    return total / kept if kept else None


def reliability_bins(scored: Iterable[Scored], bins: int = ECE_BINS) -> list[Bin]:
    """Equal-width bins of confidence, (k/bins, (k+1)/bins], the first one closed at 0: a confidence on
    an edge belongs to the bin below it (as scikit-learn's `calibration_curve` bins)."""
    inner = [k / bins for k in range(1, bins)]
    counts, sums, rights = [0] * bins, [0.0] * bins, [0] * bins
    for turn in scored:
        index = bisect_left(inner, turn.confidence)
        counts[index] += 1
        sums[index] += turn.confidence
        rights[index] += turn.right
    return [Bin(k / bins, (k + 1) / bins, counts[k], sums[k], rights[k]) for k in range(bins)]


def expected_calibration_error(binned: Sequence[Bin]) -> float | None:
    """Σ over the bins of (turns in the bin / all turns) × |accuracy − mean confidence| of the bin."""
    answered = sum(b.count for b in binned)
    if not answered:
        return None
    return sum(abs(b.right - b.confidence_sum) for b in binned) / answered


def at_coverage(points: Sequence[Point], percent: int) -> Point:
    """The highest threshold that keeps at least `percent` % of the answered turns (ties can keep more)."""
    return next(p for p in points if p.kept * 100 >= percent * p.answered)  # the last point keeps them all


def kept_at(points: Sequence[Point], threshold: float) -> tuple[int, int]:
    """(kept, right) of the curve `points` (highest threshold first) at `threshold`: its last point at
    or above it; (0, 0) when every confidence is under it."""
    above = bisect_right([-p.threshold for p in points], -threshold)  # the points whose threshold ≥ it
    return (points[above - 1].kept, points[above - 1].right) if above else (0, 0)


def calibration(turns: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """report.json's `metrics.calibration` from a report's turns."""
    ranked = scored_turns(turns)
    overall = _Figures(ranked)
    if not ranked:
        return {**overall.summary(), "bins": [], "risk_coverage": [], "at_coverage": [], "by_event": {}}
    by_event = {event: _Figures([s for s in ranked if s.event == event]) for event in sorted({s.event for s in ranked})}
    at = []
    for percent in COVERAGE_PERCENTS:
        point = at_coverage(overall.points, percent)
        shares = {}
        for event, own in by_event.items():
            kept, right = kept_at(own.points, point.threshold)
            shares[event] = {"answered": len(own.ranked), "kept": kept, "accuracy": right / kept if kept else None}
        at.append({"target": percent / 100, **point.as_json(), "by_event": shares})
    return {
        **overall.summary(),
        "bins": [b.as_json() for b in overall.bins],
        "risk_coverage": [p.as_json() for p in overall.points],
        "at_coverage": at,
        "by_event": {
            event: {**own.summary(), "risk_coverage": [p.as_json() for p in own.points]} for event, own in by_event.items()
        },
    }


class _Figures:
    """The figures of some answered turns, highest confidence first."""

    def __init__(self, ranked: Sequence[Scored]) -> None:
        self.ranked = ranked
        self.ties = ties(ranked)
        self.points = risk_coverage(self.ties)
        self.bins = reliability_bins(ranked)

    def summary(self) -> dict[str, Any]:
        return {
            "answered": len(self.ranked),
            "accuracy": self.points[-1].accuracy if self.points else None,
            "aurc": aurc(self.ties),
            "ece": expected_calibration_error(self.bins),
        }
