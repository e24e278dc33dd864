"""An evaluation's report: `report.json` (CONTRACT section 4), `report.md` for people, and a PNG
confusion matrix each for the event and the task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

from taskrouter.evaluation.files import write_atomically
from taskrouter.evaluation.metrics import macro

matplotlib.use("Agg")  # no display: files only

CONFUSION_FILES = {"event": "confusion_event.png", "task": "confusion_task.png"}


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomically(out / "report.md", markdown(report))
    for field, name in CONFUSION_FILES.items():
        plot_confusion(report["metrics"][field]["confusion"], f"{field} ({report['dataset']}, {report['target']})", out / name)


def markdown(report: dict[str, Any]) -> str:
    metrics = report["metrics"]
    latency = metrics["latency_ms"]
    lines = [
        f"# Evaluation of {report['dataset']} against {report['target']}",
        "",
        f"{len(report['turns'])} routed turns; strategy {report['strategy'] or 'the target default'}; "
        f"{report['concurrency']} in flight at once.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| event accuracy | {metrics['event']['accuracy']:.3f} |",
        f"| task accuracy | {metrics['task']['accuracy']:.3f} |",
        f"| task macro precision / recall (over the expected labels) | "
        f"{'{:.3f} / {:.3f}'.format(*macro(metrics['task']['per_class']))} |",
        f"| recall of none (no task fits, or the running task ended) | {_none_recall(metrics):.3f} |",
        f"| fallback rate (turns the fallback decided) | {metrics['fallback_rate']:.3f} |",
        f"| invalid-output rate (turns whose primary answered invalid output) | {metrics['invalid_output_rate']:.3f} |",
        f"| error rate (turns without a 200, labelled `error`) | {metrics['error_rate']:.3f} |",
        f"| latency p50 / p90 / p99 / max (ms, the decided turns' round trips) | {latency['p50']:.1f} / "
        f"{latency['p90']:.1f} / {latency['p99']:.1f} / {latency['max']:.1f} |",
        "",
    ]
    for field in ("event", "task"):
        lines += [f"## {field.capitalize()}", "", f"![{field} confusion matrix]({CONFUSION_FILES[field]})", ""]
        lines += _per_class_table(metrics[field]["per_class"])
        lines += ["", *_confusion_table(metrics[field]["confusion"]), ""]
    for backend, own in metrics["by_backend"].items():
        lines += [
            f"## Decided by {backend}",
            "",
            f"event accuracy {own['event']['accuracy']:.3f}, task accuracy {own['task']['accuracy']:.3f}, "
            f"over {sum(c['support'] for c in own['task']['per_class'].values())} turns",
            "",
            *_per_class_table(own["task"]["per_class"]),
            "",
        ]
    return "\n".join(lines)


def _none_recall(metrics: dict[str, Any]) -> float:
    return metrics["task"]["per_class"].get("none", {}).get("recall", 0.0)


def _per_class_table(per_class: dict[str, dict[str, float]]) -> list[str]:
    rows = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    rows += [
        f"| {label} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
        for label, c in per_class.items()
    ]
    return rows


def _confusion_table(confusion: dict[str, Any]) -> list[str]:
    labels = confusion["labels"]
    rows = ["| expected \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    rows += [f"| {label} | " + " | ".join(str(n) for n in row) + " |" for label, row in zip(labels, confusion["matrix"])]
    return rows


def plot_confusion(confusion: dict[str, Any], title: str, path: Path) -> None:
    """A confusion matrix as a PNG: counts in the cells, colour by the share of each expected label
    (its row), so a small class's errors show as much as a large one's."""
    import matplotlib.pyplot as plt

    labels, matrix = confusion["labels"], confusion["matrix"]
    shares = [[count / (sum(row) or 1) for count in row] for row in matrix]
    size = max(4.0, 0.55 * len(labels) + 2.5)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("expected")
    axes.set_title(title)
    for row, counts in enumerate(matrix):
        for column, count in enumerate(counts):
            if count:
                dark = shares[row][column] > 0.5
                axes.text(column, row, str(count), ha="center", va="center", color="white" if dark else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the expected label")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
