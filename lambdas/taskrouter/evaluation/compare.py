"""`taskrouter eval compare`: evaluations side by side, and a gate against a baseline
(docs/evaluation.md), so that an adapter or a prompt change can be refused by a command.

The gate judges only what it can: runs over the baseline's dataset (their digests equal), with the
gated metrics present and finite in every report; anything else is refused with its reason. Runs may
differ in strategy or task list: comparing those is what the table is for, and it shows both."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskrouter.evaluation.metrics import NONE_LABEL, macro
from taskrouter.evaluation.runner import TARGET_DEFAULT, invalid_output_rate

COLUMNS = (
    "run", "strategy", "event acc", "task acc", "macro P", "macro R", "none recall", "fallback", "invalid output",
    "AURC", "ECE", "p50 ms", "p90 ms", "dataset", "tasks",
)  # fmt: skip
DIGESTS = ("dataset_sha256", "tasks_sha256")
GATED = {"task_accuracy": "task accuracy", "none_recall": "recall of none"}
_SHOWN_DIGEST = 12  # hex digits of a digest in the table and in messages


@dataclass(frozen=True)
class Row:
    run: str
    strategy: str
    digests_missing: tuple[str, ...]  # the digest fields its report lacks (written before they were)
    dataset_sha256: str | None
    tasks_sha256: str | None  # None: the target's task list was not known (or the report predates it)
    event_accuracy: float
    task_accuracy: float | None  # None: missing from the report
    macro_precision: float
    macro_recall: float
    none_recall: float | None  # None: no turn expects none, or the report lacks it
    fallback_rate: float
    invalid_output_rate: float
    p50_ms: float
    p90_ms: float
    # Recall of each event the dataset expects (support > 0): a headline accuracy can rise while one
    # event collapses (an adapter that classifies the last message and forgets `continue`).
    event_recall: dict[str, float] = field(default_factory=dict)
    # The primary's calibration: None when the report has none (written before confidences, or no
    # turn the primary answered with one).
    aurc: float | None = None
    ece: float | None = None

    def cells(self) -> list[str]:
        rates = (
            self.event_accuracy, self.task_accuracy, self.macro_precision, self.macro_recall, self.none_recall,
            self.fallback_rate, self.invalid_output_rate,
        )  # fmt: skip
        return [
            self.run,
            self.strategy,
            *(_shown(value, ".3f") for value in rates),
            _shown(self.aurc, ".4f"),
            _shown(self.ece, ".4f"),
            _shown(self.p50_ms, ".1f"),
            _shown(self.p90_ms, ".1f"),
            _short(self.dataset_sha256),
            _short(self.tasks_sha256),
        ]


def _shown(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _short(digest: str | None) -> str:
    return "unknown" if digest is None else digest[:_SHOWN_DIGEST]


def load_row(run: Path) -> Row:
    """A run's row from its report.json; a ValueError of one line, naming the file and the field, when
    the report is not an evaluation's or holds a metric that is not a number."""
    where = run / "report.json"
    try:
        report = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{where}: not an evaluation's report ({error})") from None
    try:
        return _row(run, report)
    except _Malformed as error:
        raise ValueError(f"{where}: {error}: re-run the evaluation") from None
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{where}: not an evaluation's report ({type(error).__name__}: {error})") from None


class _Malformed(ValueError):
    pass


def _row(run: Path, report: dict[str, Any]) -> Row:
    metrics = report["metrics"]
    per_class = metrics["task"]["per_class"]
    for label, scores in per_class.items():
        for name in ("precision", "recall", "support"):
            _number(scores.get(name), f"metrics.task.per_class.{label}.{name}")
    precision, recall = macro(per_class)
    event_recall = {}
    for label, scores in metrics["event"].get("per_class", {}).items():
        if _number(scores.get("support"), f"metrics.event.per_class.{label}.support"):
            event_recall[label] = _number(scores.get("recall"), f"metrics.event.per_class.{label}.recall")
    none = per_class.get(NONE_LABEL)
    digests = {name: report.get(name) for name in DIGESTS}
    for name, digest in digests.items():
        if digest is not None and not isinstance(digest, str):
            raise _Malformed(f"{name} is a {type(digest).__name__}, not a digest")
    return Row(
        run=str(run),
        strategy=report.get("strategy") or TARGET_DEFAULT,  # reports before strategies had null
        digests_missing=tuple(name for name in DIGESTS if name not in report),
        dataset_sha256=digests["dataset_sha256"],
        tasks_sha256=digests["tasks_sha256"],
        event_accuracy=_number(metrics["event"].get("accuracy"), "metrics.event.accuracy"),
        task_accuracy=_number(metrics["task"].get("accuracy"), "metrics.task.accuracy", optional=True),
        macro_precision=precision,
        macro_recall=recall,
        none_recall=none["recall"] if none and none["support"] else None,
        fallback_rate=_number(metrics.get("fallback_rate"), "metrics.fallback_rate"),
        invalid_output_rate=invalid_output_rate(report["turns"]),  # from the documented fields alone
        p50_ms=_number(metrics["latency_ms"].get("p50"), "metrics.latency_ms.p50"),
        p90_ms=_number(metrics["latency_ms"].get("p90"), "metrics.latency_ms.p90"),
        event_recall=event_recall,
        **_calibration(metrics.get("calibration")),
    )


def _calibration(calibration: Any) -> dict[str, float | None]:
    """AURC and ECE of a report's `metrics.calibration`; None for a report without one."""
    if calibration is None:
        return {"aurc": None, "ece": None}
    if not isinstance(calibration, dict):
        raise _Malformed(f"metrics.calibration is a {type(calibration).__name__}, not an object")
    return {name: _number(calibration.get(name), f"metrics.calibration.{name}", optional=True) for name in ("aurc", "ece")}


def _number(value: Any, field: str, *, optional: bool = False) -> Any:
    """`value` when it is a JSON number (NaN and infinities included: the gate refuses those itself)."""
    if value is None and optional:
        return None
    if value is None:
        raise _Malformed(f"{field} is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Malformed(f"{field} is a {type(value).__name__}, not a number")
    return value


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def gate(rows: list[Row], baseline: Row, tolerance: float) -> list[str]:
    """Why the runs do not pass against `baseline`, one line each: the refusals (what cannot be judged)
    first, else each run's regressions past `tolerance` in task accuracy, recall of none, or the recall
    of any event the baseline's dataset expects."""
    if baseline.digests_missing:
        return [f"{baseline.run}: its report has no {', '.join(baseline.digests_missing)}: re-run the baseline "
                "with this version of taskrouter eval"]  # fmt: skip
    refusals = [problem for metric in GATED if (problem := _unjudgeable(baseline, metric))]
    for row in rows:
        if row.digests_missing:
            refusals.append(f"{row.run}: its report has no {', '.join(row.digests_missing)}: re-run it with this "
                            "version of taskrouter eval")  # fmt: skip
        elif row.dataset_sha256 != baseline.dataset_sha256:
            refusals.append(
                f"{row.run}: its dataset (sha256 {_short(row.dataset_sha256)}…) is not the baseline's "
                f"({_short(baseline.dataset_sha256)}…): gate runs over the baseline's dataset"
            )
        refusals += [problem for metric in GATED if (problem := _unjudgeable(row, metric))]
        refusals += [problem for event in baseline.event_recall if (problem := _unjudgeable_event(row, event))]
    refusals += [problem for event in baseline.event_recall if (problem := _unjudgeable_event(baseline, event))]
    if refusals:
        return refusals
    failures = []
    for row in rows:
        for metric, name in GATED.items():
            value, floor = getattr(row, metric), getattr(baseline, metric)
            if value < floor - tolerance:
                failures.append(f"{row.run}: {name} {value:.3f} is below the baseline's {floor:.3f} by more than {tolerance}")
        for event, floor in baseline.event_recall.items():
            value = row.event_recall[event]
            if value < floor - tolerance:
                failures.append(f"{row.run}: recall of event {event} {value:.3f} is below the baseline's {floor:.3f} "
                                f"by more than {tolerance}")
    return failures


def _unjudgeable_event(row: Row, event: str) -> str | None:
    value = row.event_recall.get(event)
    if value is None:  # same dataset, same support: only a report cut short lacks it
        return f"{row.run}: recall of event {event} is missing: the gate cannot judge it"
    if not math.isfinite(value):
        return f"{row.run}: recall of event {event} is {value}, not a finite number"
    return None


def _unjudgeable(row: Row, metric: str) -> str | None:
    value = getattr(row, metric)
    if value is None:
        why = " (no turn expects none)" if metric == "none_recall" else ""
        return f"{row.run}: {GATED[metric]} is missing{why}: the gate cannot judge it"
    if not math.isfinite(value):
        return f"{row.run}: {GATED[metric]} is {value}, not a finite number"
    return None
