"""What escalating the primary's doubtful answers would give on the routing benchmark (docs/benchmark.md,
"Confidence and escalation"): thresholds chosen on the dev split, measured on the test split, for each
run of routing_bench.py that has both (SmolLM2 zero-shot, and with an adapter).

    .venv/bin/python benchmarks/routing_bench.py eval --name base-zero_shot --split dev     # and --split test
    .venv/bin/python benchmarks/cascade.py [--write]                                       # --write: into docs/benchmark.md

For each run: how well its confidence sorts right from wrong on test (AURC against the random order's
and the best order's, ECE); then for each escalation budget S, the threshold `taskrouter eval threshold
--max-escalated S` picks on dev, applied to test: the share escalated, the accuracy of the kept answers
(95 % Wilson interval), and the accuracy of the cascade, where every escalated turn and every turn the
primary did not decide goes to a fallback of accuracy p: p = 1 (the ceiling) and p = 0.8. No real
fallback ran here (no network): a fallback's accuracy on these turns is not measured, and the latency
added is the escalated share times the fallback's latency, taken as FALLBACK_MS (a hosted small model's
usual answer time, not measured here).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "lambdas"))

from benchmarks import routing_bench  # noqa: E402
from taskrouter.evaluation.calibration import COVERAGE_PERCENTS, Scored, aurc, expected_calibration_error, reliability_bins, scored_turns, ties  # noqa: E402
from taskrouter.evaluation.intervals import wilson  # noqa: E402
from taskrouter.evaluation.threshold import Refused, for_escalated_share, read_run  # noqa: E402

BUDGETS = (0.1, 0.2, 0.3, 0.5)
FALLBACK_ACCURACIES = (1.0, 0.8)
FALLBACK_MS = 800
LEVEL = 0.95
BEGIN = "<!-- cascade.py: the block below is checked by a test -->"
END = "<!-- end of the cascade block -->"


def runs_with_both_splits() -> list[str]:
    return [name for name in routing_bench.load_runs("test")  # in the results block's order
            if (routing_bench.RESULTS / name / "dev" / "report.json").is_file()]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def best_aurc(scored: list[Scored]) -> float:
    """The AURC of the order that ranks every right answer first."""
    ordered = sorted(scored, key=lambda s: not s.right)
    wrong, total = 0, 0.0
    for k, turn in enumerate(ordered, start=1):
        wrong += not turn.right
        total += wrong / k
    return total / len(ordered)


def table() -> str:
    lines = []
    names = runs_with_both_splits()
    if not names:
        return "No run has both a dev and a test report with confidences yet.\n"
    lines += ["How well the confidence sorts right from wrong, on test (AURC: lower is better; random is the order "
              "that knows nothing, best the one that ranks every right answer first):", "",
              "| run | answered | accuracy | AURC | random | best | ECE |", "|---|---|---|---|---|---|---|"]
    escalations, coverage = [], []
    runs = routing_bench.load_runs("test")
    names = [name for name in names if scored_turns(runs[name]["report"]["turns"])]  # not the peer: no confidence
    for name in names:
        report = runs[name]["report"]
        test_turns = report["turns"]
        scored = scored_turns(test_turns)
        accuracy = sum(s.right for s in scored) / len(scored)
        ranked = sorted(scored, key=lambda s: -s.confidence)
        lines.append(f"| {name} | {len(scored)} | {accuracy:.2f} | {aurc(ties(ranked)):.3f} | {1 - accuracy:.3f} | "
                     f"{best_aurc(scored):.3f} | {expected_calibration_error(reliability_bins(scored)):.3f} |")
        escalations += _escalation_rows(name, test_turns, scored)
        coverage += _coverage_rows(name, report["metrics"]["calibration"])
    percents = [f"{p}%" for p in COVERAGES]
    lines += ["", "The risk-coverage table on test: the accuracy of the answers kept when the most confident share "
              "is kept (the rest escalated), overall and for each expected event (`taskrouter eval`'s report.json, "
              "`metrics.calibration.at_coverage`):", "",
              "| run | expected event | " + " | ".join(percents) + " |", "|---|---|" + "---|" * len(COVERAGES), *coverage]
    lines += ["", "The dev runs the thresholds were chosen on (`routing_bench.py eval --name NAME --split dev`):", "",
              "| run | dev turns | eval s | date |", "|---|---|---|---|"]
    for name in names:
        run = read_json(routing_bench.RESULTS / name / "dev" / "run.json")
        turns = len(read_json(routing_bench.RESULTS / name / "dev" / "report.json")["turns"])
        lines.append(f"| {name} | {turns} | {run['seconds']} | {run['date']} |")
    lines += ["", f"Each budget's threshold chosen on dev (`taskrouter eval threshold --max-escalated S`), applied to "
              f"test; the cascade's task accuracy over every test turn with a fallback of accuracy p (not measured "
              f"here); latency added on average at {FALLBACK_MS} ms a fallback call:", "",
              "| run | budget S | threshold | escalated on test | kept accuracy | cascade p=1 | cascade p=0.8 | + ms |",
              "|---|---|---|---|---|---|---|---|", *escalations]
    return "\n".join(lines) + "\n"


COVERAGES = COVERAGE_PERCENTS  # the coverages the eval report computes (metrics.calibration.at_coverage)


def _coverage_rows(name: str, calibration: dict) -> list[str]:
    at = {round(point["target"] * 100): point for point in calibration["at_coverage"]}
    rows = [f"| {name} | all | " + " | ".join(f"{at[p]['accuracy']:.2f}" for p in COVERAGES) + " |"]
    for event in routing_bench.EVENTS:
        cells = []
        for p in COVERAGES:
            kept = at[p]["by_event"].get(event) or {}
            cells.append(f"{kept['accuracy']:.2f}" if kept.get("kept") else "–")
        rows.append(f"| {name} | {event} | " + " | ".join(cells) + " |")
    return rows


def _escalation_rows(name: str, test_turns: list[dict], scored: list[Scored]) -> list[str]:
    rows = []
    dev = read_run(routing_bench.RESULTS / name / "dev")
    total = len(test_turns)
    for budget in BUDGETS:
        try:
            choice = for_escalated_share(dev, budget, LEVEL)
        except Refused as refused:
            rows.append(f"| {name} | {budget:g} | refused: {str(refused).split(': ', 1)[-1][:80]} | | | | | |")
            continue
        kept = [s for s in scored if s.confidence >= choice.threshold]
        right = sum(s.right for s in kept)
        sent = total - len(kept)  # escalated, and every turn the primary did not decide
        interval = wilson(right, len(kept), LEVEL) if kept else None
        cascade = [(right + p * sent) / total for p in FALLBACK_ACCURACIES]
        escalated = (len(scored) - len(kept)) / len(scored)
        kept_cell = f"{interval.estimate:.2f} [{interval.low:.2f}, {interval.high:.2f}]" if interval else "–"
        rows.append(f"| {name} | {budget:g} | {choice.threshold:g} | {escalated:.2f} | {kept_cell} | "
                    f"{cascade[0]:.2f} | {cascade[1]:.2f} | {escalated * FALLBACK_MS:.0f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    text = table()
    if args.write:
        routing_bench.write_block(text, BEGIN, END)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
