"""`taskrouter eval compare`: evaluations side by side, and a gate against a baseline (CONTRACT
section 4), so that an adapter or a prompt change can be refused by a command."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskrouter.evaluation.metrics import macro
from taskrouter.evaluation.runner import invalid_output_rate

COLUMNS = (
    "run", "event acc", "task acc", "macro P", "macro R", "none recall", "fallback", "invalid output", "p50 ms",
    "p90 ms",
)  # fmt: skip


@dataclass(frozen=True)
class Row:
    run: str
    event_accuracy: float
    task_accuracy: float
    macro_precision: float
    macro_recall: float
    none_recall: float
    fallback_rate: float
    invalid_output_rate: float
    p50_ms: float
    p90_ms: float

    def cells(self) -> list[str]:
        return [
            self.run,
            *(f"{value:.3f}" for value in (
                self.event_accuracy, self.task_accuracy, self.macro_precision, self.macro_recall,
                self.none_recall, self.fallback_rate, self.invalid_output_rate,
            )),
            f"{self.p50_ms:.1f}",
            f"{self.p90_ms:.1f}",
        ]  # fmt: skip


def load_row(run: Path) -> Row:
    try:
        report: dict[str, Any] = json.loads((run / "report.json").read_text(encoding="utf-8"))
        metrics = report["metrics"]
        precision, recall = macro(metrics["task"]["per_class"])
        return Row(
            run=str(run),
            event_accuracy=metrics["event"]["accuracy"],
            task_accuracy=metrics["task"]["accuracy"],
            macro_precision=precision,
            macro_recall=recall,
            none_recall=metrics["task"]["per_class"].get("none", {}).get("recall", 0.0),
            fallback_rate=metrics["fallback_rate"],
            invalid_output_rate=invalid_output_rate(report["turns"]),  # from the contract's fields alone
            p50_ms=metrics["latency_ms"]["p50"],
            p90_ms=metrics["latency_ms"]["p90"],
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{run}: not an evaluation's output ({type(error).__name__}: {error})") from None


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def gate(rows: list[Row], baseline: Row, tolerance: float) -> list[str]:
    """Each run's regressions past `tolerance` in task accuracy or recall of none, one line each."""
    failures = []
    for row in rows:
        for metric, name in (("task_accuracy", "task accuracy"), ("none_recall", "recall of none")):
            value, floor = getattr(row, metric), getattr(baseline, metric)
            if value < floor - tolerance:
                failures.append(f"{row.run}: {name} {value:.3f} is below the baseline's {floor:.3f} by more than {tolerance}")
    return failures
