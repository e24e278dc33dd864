"""`taskrouter eval`: replay a labelled dataset through a target and measure it (CONTRACT section 4)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from taskrouter.evaluation.dataset import DatasetError, Turn, load_dataset, turns_of
from taskrouter.evaluation.metrics import ERROR_LABEL, classification, label_of, latency_summary
from taskrouter.evaluation.progress import progress_bar
from taskrouter.evaluation.targets import Outcome, Target


def run_turns(
    turns: Sequence[Turn],
    target: Target,
    *,
    strategy: str | None = None,
    concurrency: int = 1,
    on_done: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Each turn's record, in the dataset's order whatever the concurrency."""

    def routed(turn: Turn) -> dict[str, Any]:
        outcome = target.route(turn, strategy)
        on_done()
        return _record(turn, outcome)

    if concurrency <= 1:
        return [routed(turn) for turn in turns]
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval") as pool:
        return list(pool.map(routed, turns))  # map keeps the order of its input


def _record(turn: Turn, outcome: Outcome) -> dict[str, Any]:
    return {
        "conversation": turn.conversation,
        "index": turn.index,
        "expected": {"task": turn.expected.task, "event": turn.expected.event},
        "predicted": {"task": outcome.task, "event": outcome.event},
        "backend": outcome.backend,
        "fallback_reason": outcome.fallback_reason,
        "latency_ms": outcome.latency_ms,
        "status": outcome.status,
        **({"error": outcome.error} if outcome.error else {}),
    }


def _labels(turns: Sequence[dict[str, Any]], field: str) -> tuple[list[str], list[str]]:
    """Expected and predicted labels of `field` ("task" or "event"); a turn with no decision is `error`."""
    expected = [label_of(t["expected"][field]) for t in turns]
    predicted = [label_of(t["predicted"][field]) if t["status"] == 200 else ERROR_LABEL for t in turns]
    return expected, predicted


def measure(turns: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's `metrics` from its turns."""
    decided = [t for t in turns if t["status"] == 200]
    by_backend = {}
    for backend in sorted({t["backend"] for t in decided}):
        own = [t for t in decided if t["backend"] == backend]
        by_backend[backend] = {field: classification(*_labels(own, field)) for field in ("event", "task")}
    return {
        "event": classification(*_labels(turns, "event")),
        "task": classification(*_labels(turns, "task")),
        # the decided turns' round trips: a refusal's quick answer would flatter them
        "latency_ms": latency_summary([t["latency_ms"] for t in decided]),
        # shares of all turns: those the fallback decided, those whose primary answered invalid output,
        # those that got no decision
        "fallback_rate": _share(sum(t["fallback_reason"] is not None for t in turns), len(turns)),
        "invalid_output_rate": invalid_output_rate(turns),
        "error_rate": _share(len(turns) - len(decided), len(turns)),
        "by_backend": by_backend,
    }


def invalid_output_rate(turns: Sequence[dict[str, Any]]) -> float:
    """The share of turns whose `fallback_reason` is `invalid_output` (CONTRACT section 4)."""
    return _share(sum(t["fallback_reason"] == "invalid_output" for t in turns), len(turns))


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def evaluate(
    dataset: Path,
    target: Target,
    target_name: str,
    out: Path,
    *,
    strategy: str | None = None,
    concurrency: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Replay `dataset` through `target`, write `out/report.json`, `report.md` and the two confusion
    matrices; the report."""
    from taskrouter.evaluation.report import write_report  # matplotlib: fails now, not after the run

    turns = turns_of(load_dataset(dataset))
    if not turns:
        raise DatasetError(f"{dataset.name}: no user turn to route")
    out.mkdir(parents=True, exist_ok=True)  # an output that cannot be written fails now, too
    with progress_bar(len(turns), "routing turns", enabled=progress) as advance:
        records = run_turns(turns, target, strategy=strategy, concurrency=concurrency, on_done=advance)
    report = {
        "dataset": dataset.name,
        "target": target_name,
        "strategy": strategy,
        "concurrency": concurrency,
        "turns": records,
        "metrics": measure(records),
    }
    write_report(report, out)
    return report
