"""The routing metrics of an evaluation (docs/evaluation.md), computed in one place.

Labels are strings: a task name, or `none` for no task (a null task). A turn that got no decision (no
answer, an error status, or an answer that is not the API's) is predicted as `(error)`, a name no task
can have (names match `^[a-z][a-z0-9_]{2,63}$`), so that a task named `error` stays a task: failures
lower the accuracy and the recall of the label they missed, never a task's precision, and show in the
confusion matrix's last column instead of vanishing from it. A class's precision is 0 when it was never
predicted, its recall 0 when it never occurs, its F1 0 when both are (scikit-learn's `zero_division=0`,
which a test checks these against).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

NONE_LABEL = "none"
ERROR_LABEL = "(error)"  # fails the task-name rule: never a task


def label_of(task: str | None) -> str:
    return NONE_LABEL if task is None else task


def failed(turn: dict[str, Any]) -> bool:
    """An error turn of a report: no answer, an error status, or a 200 that is not the API's answer."""
    return turn["status"] != 200 or turn.get("error") is not None


def classification(expected: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support of every label but `(error)`, and the confusion
    matrix (rows expected, columns predicted, over the sorted labels of both, then `(error)` when a
    turn failed)."""
    if len(expected) != len(predicted):
        raise ValueError("expected and predicted differ in length")
    classes = sorted((set(expected) | set(predicted)) - {ERROR_LABEL})
    labels = classes + ([ERROR_LABEL] if ERROR_LABEL in predicted else [])
    pairs = Counter(zip(expected, predicted))
    support, predicted_count = Counter(expected), Counter(predicted)
    per_class = {}
    for label in classes:
        hits = pairs[(label, label)]
        precision = hits / predicted_count[label] if predicted_count[label] else 0.0
        recall = hits / support[label] if support[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support[label]}
    correct = sum(count for (want, got), count in pairs.items() if want == got and want != ERROR_LABEL)
    return {
        "accuracy": correct / len(expected) if expected else 0.0,
        "per_class": per_class,
        "confusion": {"labels": labels, "matrix": [[pairs[(want, got)] for got in labels] for want in labels]},
    }


def macro(per_class: dict[str, dict[str, float]]) -> tuple[float, float]:
    """Precision and recall averaged over the expected labels (support > 0): runs over one dataset
    share the denominator, whatever labels each predicted."""
    expected = [c for c in per_class.values() if c["support"] > 0]
    if not expected:
        return 0.0, 0.0
    return (
        sum(c["precision"] for c in expected) / len(expected),
        sum(c["recall"] for c in expected) / len(expected),
    )


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 (nearest rank: the smallest value with at least that share of values at or
    under it) and max."""
    ordered = sorted(latencies_ms)
    if not ordered:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": ordered[-1]}
