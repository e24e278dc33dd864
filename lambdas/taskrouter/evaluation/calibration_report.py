"""The calibration part of an evaluation's report for people: report.md's section (the risk–coverage
table at fixed coverages, overall and per expected event, the per-event figures, the reliability
bins) and the reliability diagram `reliability.png` (docs/evaluation.md, "Calibration")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taskrouter.evaluation.calibration import ECE_BINS

RELIABILITY_FILE = "reliability.png"


def markdown_section(calibration: dict[str, Any], turns: int) -> list[str]:
    lines = ["## Calibration of the primary's confidence", ""]
    answered = calibration["answered"]
    if not answered:
        return lines + [
            f"No turn of the {turns} holds the primary's answer with its confidence (a target whose primary gives none, "
            "or that the fallback decided throughout), so there is nothing to calibrate.",
            "",
            f"![reliability diagram]({RELIABILITY_FILE})",
            "",
        ]
    lines += [
        f"Over the {answered} turns of {turns} that the primary answered with a confidence: its accuracy "
        f"{calibration['accuracy']:.3f}, the area under the risk–coverage curve (AURC, lower is better) "
        f"{calibration['aurc']:.4f}, the expected calibration error ({ECE_BINS} equal-width bins, weighted by their "
        f"turns) {calibration['ece']:.4f}.",
        "",
        "A threshold keeps the answers whose confidence is at least it and escalates the others. Each row is the "
        "highest threshold that keeps at least the coverage asked for; the events' columns are the accuracy of "
        "each expected event's kept turns at that same threshold (kept of answered in brackets), where a "
        "confidently wrong event shows.",
        "",
    ]
    events = list(calibration["by_event"])
    header = ["coverage asked", "threshold", "kept", "coverage", "accuracy of kept", "escalated", *events]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in calibration["at_coverage"]:
        cells = [
            f"{row['target']:.0%}", f"{row['threshold']:.4g}", str(row["kept"]), f"{row['coverage']:.3f}",
            f"{row['accuracy']:.3f}", f"{row['escalated']:.3f}",
        ]  # fmt: skip
        for event in events:
            share = row["by_event"][event]
            accuracy = "—" if share["accuracy"] is None else f"{share['accuracy']:.3f}"
            cells.append(f"{accuracy} ({share['kept']}/{share['answered']})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| expected event | answered | accuracy | AURC | ECE |",
        "|---|---|---|---|---|",
        *(
            f"| {event} | {own['answered']} | {own['accuracy']:.3f} | {own['aurc']:.4f} | {own['ece']:.4f} |"
            for event, own in calibration["by_event"].items()
        ),
        "",
        f"![reliability diagram]({RELIABILITY_FILE})",
        "",
        "| confidence | turns | mean confidence | accuracy |",
        "|---|---|---|---|",
        *(
            f"| {b['lower']:.3f}–{b['upper']:.3f} | {b['count']} | {b['confidence']:.3f} | {b['accuracy']:.3f} |"
            for b in calibration["bins"]
            if b["count"]
        ),
        "",
        "report.json holds the whole curve, overall and per event: a point at every distinct confidence.",
        "",
    ]
    return lines


def plot_reliability(calibration: dict[str, Any], title: str, path: Path) -> None:
    """The reliability diagram: each bin's accuracy against its mean confidence (the diagonal is a
    calibrated model), the bins' turns below it."""
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(6.0, 7.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )  # fmt: skip
    width = 1 / ECE_BINS
    filled = [b for b in calibration["bins"] if b["count"]]
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="calibrated")
    if filled:
        top.bar([b["lower"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
                color="#4c72b0", edgecolor="white", alpha=0.85, label="accuracy of the bin")  # fmt: skip
        top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="#dd8452",
                 label="at the bin's mean confidence", clip_on=False)  # fmt: skip
        bottom.bar([b["lower"] for b in filled], [b["count"] for b in filled], width=width, align="edge",
                   color="#8c8c8c", edgecolor="white")  # fmt: skip
        summary = f"ECE {calibration['ece']:.3f}, AURC {calibration['aurc']:.3f}, {calibration['answered']} turns"
    else:
        top.text(0.5, 0.5, "no turn with the primary's confidence", ha="center", va="center")
        summary = "no confidence"
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy of the primary's answers")
    top.set_title(f"{title}\n{summary}")
    top.legend(loc="upper left", fontsize="small")
    bottom.set_xlabel(f"the primary's confidence ({ECE_BINS} bins)")
    bottom.set_ylabel("turns")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
