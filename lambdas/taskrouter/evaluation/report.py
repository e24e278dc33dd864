"""An evaluation's report: `report.json` (docs/evaluation.md), `report.md` for people, a PNG
confusion matrix each for the event and the task, and the primary's reliability diagram.

report.json keeps every label; the pictures and report.md's matrices show the most frequent labels
(and `none` always), the others folded into `(other)`, so that they stay readable whatever the labels.
Pseudo-labels are spelled in parentheses, which no task name can hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

from taskrouter.evaluation.calibration_report import RELIABILITY_FILE, markdown_section, plot_reliability
from taskrouter.evaluation.files import write_atomically
from taskrouter.evaluation.metrics import ERROR_LABEL, NONE_LABEL, macro

matplotlib.use("Agg")  # no display: files only

CONFUSION_FILES = {"event": "confusion_event.png", "task": "confusion_task.png"}
MAX_SHOWN_LABELS = 12  # labels a picture or a table shows, besides (other) and (error)
OTHER_LABEL = "(other)"  # the labels not shown, together
_TICK_CHARS = 28  # a label's length on an axis: a 64-character task name would squeeze the matrix
_TITLE_CHARS = 80
_SHOWN_ERROR_TURNS = 20  # report.md's list of error turns; report.json has them all


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomically(out / "report.md", markdown(report))
    for field, name in CONFUSION_FILES.items():
        title = _clipped(f"{field} ({report['dataset']}, {report['target']})", _TITLE_CHARS)
        plot_confusion(shown_confusion(report["metrics"][field]["confusion"]), title, out / name)
    title = _clipped(f"reliability ({report['dataset']}, {report['target']})", _TITLE_CHARS)
    plot_reliability(report["metrics"]["calibration"], title, out / RELIABILITY_FILE)


def markdown(report: dict[str, Any]) -> str:
    metrics = report["metrics"]
    latency = metrics["latency_ms"]
    lines = [
        f"# Evaluation of {report['dataset']} against {report['target']}",
        "",
        f"{len(report['turns'])} routed turns; strategy {report['strategy']}; {report['concurrency']} in flight at "
        f"once; a deadline of {report['turn_timeout_s']:g} s a turn.",
        "",
        f"Dataset sha256 `{report['dataset_sha256']}`; task list sha256 `{report['tasks_sha256'] or 'unknown'}`.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| event accuracy | {metrics['event']['accuracy']:.3f} |",
        f"| task accuracy | {metrics['task']['accuracy']:.3f} |",
        f"| task macro precision / recall (over the expected labels) | "
        f"{'{:.3f} / {:.3f}'.format(*macro(metrics['task']['per_class']))} |",
        f"| recall of none (no task fits, or the running task ended) | {_none_recall(metrics)} |",
        f"| fallback rate (turns the fallback decided) | {metrics['fallback_rate']:.3f} |",
        f"| invalid-output rate (turns whose primary answered invalid output) | {metrics['invalid_output_rate']:.3f} |",
        f"| error rate (turns with no answer, an error status, or an answer not the API's: `{ERROR_LABEL}`) | "
        f"{metrics['error_rate']:.3f} |",
        f"| latency p50 / p90 / p99 / max (ms, the decided turns' round trips) | {latency['p50']:.1f} / "
        f"{latency['p90']:.1f} / {latency['p99']:.1f} / {latency['max']:.1f} |",
        "",
    ]
    for field in ("event", "task"):
        lines += [f"## {field.capitalize()}", "", f"![{field} confusion matrix]({CONFUSION_FILES[field]})", ""]
        lines += _per_class_table(metrics[field]["per_class"])
        lines += ["", *_confusion_table(metrics[field]["confusion"]), ""]
    error_turns = [t for t in report["turns"] if t.get("error")]
    if error_turns:
        lines += ["## Error turns", "", "| conversation | turn | status | error |", "|---|---|---|---|"]
        lines += [
            f"| {_cell(t['conversation'])} | {t['index']} | {t['status']} | {_cell(t['error'])} |"
            for t in error_turns[:_SHOWN_ERROR_TURNS]
        ]
        if len(error_turns) > _SHOWN_ERROR_TURNS:
            lines += ["", f"{len(error_turns)} error turns in all: report.json lists each."]
        lines += [""]
    lines += markdown_section(metrics["calibration"], len(report["turns"]))
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


def _none_recall(metrics: dict[str, Any]) -> str:
    none = metrics["task"]["per_class"].get(NONE_LABEL)
    return f"{none['recall']:.3f}" if none and none["support"] else "n/a (no turn expects none)"


def _cell(text: str) -> str:
    """Text in a Markdown table cell: no line break, no column break."""
    return " ".join(text.split()).replace("|", "\\|")


def _clipped(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _per_class_table(per_class: dict[str, dict[str, float]]) -> list[str]:
    rows = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    rows += [
        f"| {label} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
        for label, c in per_class.items()
    ]
    return rows


def _confusion_table(confusion: dict[str, Any]) -> list[str]:
    shown = shown_confusion(confusion)
    labels = shown["labels"]
    rows = ["| expected \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    rows += [f"| {label} | " + " | ".join(str(n) for n in row) + " |" for label, row in zip(labels, shown["matrix"])]
    if shown is not confusion:
        rows += ["", f"{len(confusion['labels'])} labels in all: report.json holds the whole matrix."]
    return rows


def shown_confusion(confusion: dict[str, Any], limit: int = MAX_SHOWN_LABELS) -> dict[str, Any]:
    """`confusion` as a picture or a table shows it: whole when it has at most `limit` labels, else
    `none` and the most frequent labels (expected or predicted), the others summed into `(other)`,
    `(error)` last. Every count stays in some cell."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    classes = [label for label in labels if label != ERROR_LABEL]
    if len(classes) <= limit:
        return confusion
    frequency = {
        label: sum(matrix[i]) + sum(row[i] for row in matrix) for i, label in enumerate(labels)
    }  # fmt: skip
    pinned = [NONE_LABEL] if NONE_LABEL in classes else []
    ranked = sorted((label for label in classes if label not in pinned), key=lambda label: -frequency[label])
    kept = set(pinned + ranked[: limit - len(pinned)])
    shown = [label for label in classes if label in kept] + [OTHER_LABEL] + [ERROR_LABEL] * (ERROR_LABEL in labels)
    position = {label: index for index, label in enumerate(shown)}

    def place(label: str) -> int:
        return position.get(label, position[OTHER_LABEL])

    folded = [[0] * len(shown) for _ in shown]
    for row, expected in enumerate(labels):
        for column, predicted in enumerate(labels):
            folded[place(expected)][place(predicted)] += matrix[row][column]
    return {"labels": shown, "matrix": folded}


def plot_confusion(confusion: dict[str, Any], title: str, path: Path) -> None:
    """A confusion matrix as a PNG: counts in the cells, colour by the share of each expected label
    (its row), so a small class's errors show as much as a large one's. Its size follows the number of
    labels, which `shown_confusion` bounds."""
    import matplotlib.pyplot as plt

    labels = [_clipped(label, _TICK_CHARS) for label in confusion["labels"]]
    matrix = confusion["matrix"]
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
