"""`taskrouter eval`: replay a labelled dataset through a target and measure it (docs/evaluation.md)."""

from __future__ import annotations

import concurrent.futures
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskrouter.core.tasks import Task, tasks_sha256
from taskrouter.evaluation.calibration import calibration
from taskrouter.evaluation.dataset import DatasetError, Turn, parse_dataset, turns_of
from taskrouter.evaluation.digests import dataset_sha256
from taskrouter.evaluation.metrics import ERROR_LABEL, classification, failed, label_of, latency_summary
from taskrouter.evaluation.progress import progress_bar
from taskrouter.evaluation.targets import DEFAULT_TURN_TIMEOUT_S, Outcome, Target, refusal

TARGET_DEFAULT = "target default"  # the report's strategy when none was sent
_SHOWN_REFUSALS = 3  # turns the API would refuse, named in the warning


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
        "confidence": outcome.confidence,
        **({"primary_task": outcome.primary_task} if outcome.primary_known else {}),  # absent: not known
        **({"error": outcome.error} if outcome.error else {}),
    }


def _labels(turns: Sequence[dict[str, Any]], field: str) -> tuple[list[str], list[str]]:
    """Expected and predicted labels of `field` ("task" or "event"); an error turn's prediction is
    `(error)`, never a label."""
    expected = [label_of(t["expected"][field]) for t in turns]
    predicted = [ERROR_LABEL if failed(t) else label_of(t["predicted"][field]) for t in turns]
    return expected, predicted


def measure(turns: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's `metrics` from its turns."""
    decided = [t for t in turns if not failed(t)]
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
        # the error turns
        "fallback_rate": _share(sum(t["fallback_reason"] is not None for t in turns), len(turns)),
        "invalid_output_rate": invalid_output_rate(turns),
        "error_rate": _share(len(turns) - len(decided), len(turns)),
        "by_backend": by_backend,
        "calibration": calibration(decided),
    }


def invalid_output_rate(turns: Sequence[dict[str, Any]]) -> float:
    """The share of turns whose `fallback_reason` is `invalid_output`."""
    return _share(sum(t["fallback_reason"] == "invalid_output" for t in turns), len(turns))


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


@dataclass(frozen=True)
class Dataset:
    name: str  # the file's name, or "standard input"
    sha256: str
    turns: list[Turn]


def read_dataset(raw: bytes, name: str) -> Dataset:
    turns = turns_of(parse_dataset(raw, name))
    if not turns:
        raise DatasetError(f"{name}: no user turn to route")
    return Dataset(name, dataset_sha256(raw), turns)


def prepare_output(out: Path) -> None:
    """Make `out` and write in it once, so that a folder the report cannot go to fails before any turn."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out):
        pass


def warnings_before_routing(turns: Sequence[Turn], tasks: list[Task] | None, strategy: str | None) -> list[str]:
    """What makes some turns unroutable, told before any is routed: labels the target's task list does
    not hold, and turns the API would refuse (which count as error turns, at either target)."""
    said = []
    if tasks is None:
        said.append("the target's task list could not be read: labels are not checked against it, tasks_sha256 is null")
    else:
        names = {task.name for task in tasks}
        unknown = Counter(
            label for turn in turns for label in {turn.expected.task, turn.current_task} - {None} if label not in names
        )
        if unknown:
            said.append(
                f"labels not in the task list the target routes over: {_counted(unknown)}; check the dataset or the tasks"
            )
        ignored = Counter(name for turn in turns for name in set(turn.tasks or ()) if name not in names)
        if ignored:
            said.append(f"allowed tasks (a turn's tasks) not in the task list the target routes over, which it ignores: "
                        f"{_counted(ignored)}; give the task file the dataset came with")  # fmt: skip
    refused = [(turn, error) for turn in turns if (error := refusal(turn, strategy)) is not None]
    if refused:
        shown = "; ".join(f"{t.conversation} turn {t.index}: {e.status} {e.message}" for t, e in refused[:_SHOWN_REFUSALS])
        more = f"; and {len(refused) - _SHOWN_REFUSALS} more" if len(refused) > _SHOWN_REFUSALS else ""
        said.append(f"{len(refused)} turns the API would refuse, counted as error turns: {shown}{more}")
    return said


def _counted(names: Counter[str]) -> str:
    return ", ".join(f"{name} ({count} turns)" for name, count in sorted(names.items()))


def evaluate(
    dataset: Dataset,
    target: Target,
    target_name: str,
    out: Path,
    *,
    strategy: str | None = None,
    concurrency: int = 1,
    turn_timeout_s: float = DEFAULT_TURN_TIMEOUT_S,
    progress: bool = True,
    warn: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Replay `dataset` through `target`, write `out/report.json`, `report.md` and the two confusion
    matrices; the report. The caller checks `out` with `prepare_output` before anything else;
    `turn_timeout_s` is the one `target` was given, for the report."""
    from taskrouter.evaluation.report import write_report  # matplotlib: fails now, not after the run

    tasks = target.tasks()
    for line in warnings_before_routing(dataset.turns, tasks, strategy):
        warn(line)
    with progress_bar(len(dataset.turns), "routing turns", enabled=progress) as advance:
        records = run_turns(dataset.turns, target, strategy=strategy, concurrency=concurrency, on_done=advance)
    report = {
        "dataset": dataset.name,
        "dataset_sha256": dataset.sha256,
        "target": target_name,
        "tasks_sha256": None if tasks is None else tasks_sha256(tasks),
        "strategy": strategy or TARGET_DEFAULT,
        "concurrency": concurrency,
        "turn_timeout_s": turn_timeout_s,
        "turns": records,
        "metrics": measure(records),
    }
    write_report(report, out)
    return report
