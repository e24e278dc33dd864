"""`taskrouter eval threshold`: the confidence threshold a run's turns support (docs/evaluation.md,
"Choosing a threshold"), and the configuration lines that set it.

A threshold t keeps the primary's answers whose confidence is at least t and escalates the others.
The candidates are the run's distinct confidences (a threshold between two of them keeps the same
turns as the higher one). Two goals:
- a target accuracy A of the kept turns: the lowest candidate (the most kept) whose kept turns'
  Wilson lower bound reaches A;
- a most escalated share S of the answered turns: the highest candidate escalating at most S.
Either refuses, rather than guess, when the run has too few answered turns to stand behind the
choice (`needed_for_accuracy`, `needed_for_share`), when nothing reaches the target, or when the run
recorded no confidence."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from taskrouter.evaluation.calibration import Point, Scored, primary_answered, risk_coverage, scored_turns, ties
from taskrouter.evaluation.intervals import Interval, trials_for_lower_bound, wilson
from taskrouter.evaluation.runner import TARGET_DEFAULT

BASE_ADAPTER = "base"  # the threshold's adapter when the router invokes the base model
ADAPTER_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")  # a stage's adapter names (infra/config.py)
STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # a bare TOML key, as stages.toml names its stages
SHARE_SIDE_TURNS = 10  # turns expected on each side of a share (escalated and kept) before it is estimated
ENVIRONMENT_VARIABLE = "TASKROUTER_CONFIDENCE_THRESHOLDS"


class Refused(ValueError):
    """The run cannot support the threshold asked for; the message says why and what would."""


@dataclass(frozen=True)
class Run:
    """What a threshold is chosen from: a run's answered turns (highest confidence first) and what
    binds the threshold (strategy, task list), from its report.json."""

    path: Path
    strategy: str
    tasks_sha256: str | None
    dataset_sha256: str | None
    turns: int
    ranked: list[Scored]


@dataclass(frozen=True)
class Choice:
    threshold: float  # what the configuration says: keeps exactly the turns of `point`
    point: Point
    accuracy: Interval  # of the kept turns
    escalated: Interval  # share of the answered turns


def read_run(run: Path) -> Run:
    """A run's report.json; a ValueError of one line naming the file and the field when it is not an
    evaluation's report."""
    where = run / "report.json"
    try:
        report = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{where}: not an evaluation's report ({getattr(error, 'strerror', None) or error})") from None
    if not isinstance(report, dict) or not isinstance(report.get("turns"), list):
        raise ValueError(f"{where}: not an evaluation's report (no turns)")
    for index, turn in enumerate(report["turns"]):
        problem = _turn_problem(turn)
        if problem:
            raise ValueError(f"{where}: turns[{index}].{problem}: re-run the evaluation")
    digests = {name: report.get(name) for name in ("tasks_sha256", "dataset_sha256")}
    for name, digest in digests.items():
        if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise ValueError(f"{where}: {name} is not a SHA-256 digest: re-run the evaluation")
    strategy = report.get("strategy") or TARGET_DEFAULT
    if not isinstance(strategy, str):
        raise ValueError(f"{where}: strategy is a {type(strategy).__name__}, not a strategy's name")
    ranked = scored_turns(report["turns"])
    return Run(run, strategy, digests["tasks_sha256"], digests["dataset_sha256"], len(report["turns"]), ranked)


def _turn_problem(turn: Any) -> str | None:
    """What makes a report's turn unreadable for a threshold, as `field: why`; None when it reads."""
    if not isinstance(turn, dict):
        return "(turn): not an object"
    expected = turn.get("expected")
    if not (isinstance(expected, dict) and _task_or_null(expected.get("task")) and isinstance(expected.get("event"), str)):
        return "expected: not {task, event}"
    if not isinstance(turn.get("status"), int):
        return "status: not an HTTP status"
    if not primary_answered(turn):
        return None  # not a turn a threshold is chosen from
    confidence = turn["confidence"]
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
        return "confidence: not a number from 0 to 1"
    if not _task_or_null(turn["primary_task"]):
        return "primary_task: not a task name or null"
    return None


def _task_or_null(value: Any) -> bool:
    return value is None or isinstance(value, str)


def needed_for_accuracy(target: float, level: float) -> int:
    """Answered turns a target accuracy needs: the fewest n whose Wilson lower bound at n of n right
    reaches it (fewer cannot show it, however right they are)."""
    return trials_for_lower_bound(target, level)


def needed_for_share(share: float) -> int:
    """Answered turns a share needs: SHARE_SIDE_TURNS expected on each side of it, escalated and kept
    (the usual condition for estimating a proportion), so n ≥ 10 / min(S, 1 − S)."""
    return math.ceil(SHARE_SIDE_TURNS / min(share, 1 - share) - 1e-9)


def for_accuracy(run: Run, target: float, level: float) -> Choice:
    """The lowest threshold whose kept turns' Wilson lower bound (at `level`) reaches `target`."""
    points = _points(run)
    needed = needed_for_accuracy(target, level)
    if len(run.ranked) < needed:
        raise Refused(
            f"{_where(run)}: {len(run.ranked)} answered turns; an accuracy of {target:g} at level {level:g} needs at "
            f"least {needed} (the fewest n whose Wilson lower bound reaches {target:g} when all n are right): "
            "evaluate a larger reviewed dataset"
        )
    reaching = [p for p in points if wilson(p.right, p.kept, level).low >= target]
    if not reaching:
        best = max(points, key=lambda p: wilson(p.right, p.kept, level).low)
        bound = wilson(best.right, best.kept, level)
        raise Refused(
            f"{_where(run)}: no threshold keeps turns whose accuracy is at least {target:g} at level {level:g}: the "
            f"best, {best.threshold:.4g}, keeps {best.kept} turns {bound.estimate:.3f} right (Wilson lower bound "
            f"{bound.low:.3f}); ask for less, or choose by --max-escalated"
        )
    return _choice(run, points, reaching[-1], level)  # the points run from the highest threshold down


def for_escalated_share(run: Run, share: float, level: float) -> Choice:
    """The highest threshold escalating at most `share` of the answered turns."""
    points = _points(run)
    needed = needed_for_share(share)
    if len(run.ranked) < needed:
        raise Refused(
            f"{_where(run)}: {len(run.ranked)} answered turns; an escalated share of {share:g} needs at least {needed} "
            f"({SHARE_SIDE_TURNS} expected on each side of it, escalated and kept: 10 / min(S, 1 - S)): evaluate a "
            "larger reviewed dataset"
        )
    # the last point keeps every turn (escalates none), so some point always qualifies
    chosen = next(p for p in points if (p.answered - p.kept) <= share * p.answered + 1e-9)  # 0.29 × 100 is 28.999…
    return _choice(run, points, chosen, level)


def _points(run: Run) -> list[Point]:
    if not run.ranked:
        raise Refused(
            f"{_where(run)}: no turn holds the primary's confidence with its answer (of {run.turns} turns): evaluate "
            "a target whose primary reports confidences, with this version of taskrouter eval"
        )
    return risk_coverage(ties(run.ranked))


def _choice(run: Run, points: list[Point], chosen: Point, level: float) -> Choice:
    below = points.index(chosen) + 1
    next_lower = points[below].threshold if below < len(points) else 0.0
    if chosen.threshold <= 0:  # only a threshold of 0 keeps an answer of confidence 0, and 0 escalates nothing
        raise Refused(f"{_where(run)}: the choice keeps every answer, down to a confidence of 0: set no threshold")
    return Choice(
        threshold=shortest_between(next_lower, chosen.threshold),
        point=chosen,
        accuracy=wilson(chosen.right, chosen.kept, level),
        escalated=wilson(chosen.answered - chosen.kept, chosen.answered, level),
    )


def shortest_between(lower: float, upper: float) -> float:
    """The number of fewest decimals in (lower, upper]: a threshold that keeps exactly the turns of
    confidence `upper` and above, written short enough to read (0.6235, not 0.62351230955)."""
    if upper <= lower:  # a confidence of 0: only 0 keeps it
        return upper
    exact = Decimal(repr(upper))
    for places in range(1, 18):
        candidate = float(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_FLOOR))
        if lower < candidate <= upper:
            return candidate
    return upper


def _where(run: Run) -> str:
    return str(run.path)


# -- what binds a threshold ------------------------------------------------------------------------


def strategy_of(run: Run, given: str | None) -> str:
    """The strategy the run's confidences were measured under."""
    if run.strategy == TARGET_DEFAULT:
        if given is None:
            raise Refused(
                f"{_where(run)}: its turns were routed with the target's default strategy, which the report cannot "
                "name: give --strategy, the stage's default strategy when it ran"
            )
        return given
    if given is not None and given != run.strategy:
        raise Refused(f"{_where(run)}: its turns were routed with {run.strategy}, not {given}: a threshold holds for "
                      "the strategy it was measured under")  # fmt: skip
    return run.strategy


def tasks_digest_of(run: Run) -> str:
    if run.tasks_sha256 is None:
        raise Refused(
            f"{_where(run)}: its task list was not known (tasks_sha256 is null), and a threshold is bound to it: "
            "re-run the evaluation where the target's tasks can be read"
        )
    return run.tasks_sha256


def adapter_of(value: str, run: Run) -> str:
    """The adapter's name from --adapter: a name (`base` for the base model), or a folder holding an
    adapter's manifest.json (`taskrouter adapter train`'s, or a stage's manifest file itself). A
    manifest that records its training dataset's digest refuses a run over that same dataset: its
    confidences on turns it was trained on say nothing of the turns it has not seen."""
    path = Path(value)
    if value == BASE_ADAPTER:  # the name, even beside a folder called so
        return value
    if not path.exists():
        if not ADAPTER_NAME.fullmatch(value):
            raise ValueError(f"--adapter {value!r}: give base, an adapter's name as the stage's adapters name it "
                             "(lower-case words joined by '-'), or a folder holding its manifest.json")  # fmt: skip
        return value
    manifest_file = path / "manifest.json" if path.is_dir() else path
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"--adapter {value}: {manifest_file} cannot be read as an adapter's manifest "
                         f"({getattr(error, 'strerror', None) or error})") from None  # fmt: skip
    if not isinstance(manifest, dict):
        raise ValueError(f"--adapter {value}: {manifest_file} is not an adapter's manifest")
    trained_on = manifest.get("dataset", {}).get("sha256") if isinstance(manifest.get("dataset"), dict) else None
    if trained_on is not None and trained_on == run.dataset_sha256:
        raise Refused(
            f"{_where(run)}: its dataset (sha256 {trained_on[:12]}…) is the one {manifest_file} was trained on: "
            "calibrate on a reviewed dataset training never saw (the benchmark's dev split)"
        )
    name = manifest.get("name")
    if name is None:  # `adapter train` names no adapter: the folder does, as the stage's adapters will
        name = (path if path.is_dir() else path.parent).resolve().name
        origin = f"the folder's name ({manifest_file} has no name)"
    else:
        origin = f"the name in {manifest_file}"
    if not (isinstance(name, str) and ADAPTER_NAME.fullmatch(name) and name != BASE_ADAPTER):
        raise ValueError(f"--adapter {value}: {origin}, {name!r}, is not an adapter's name (lower-case words joined "
                         "by '-'): give --adapter NAME")  # fmt: skip
    return name


# -- the lines to paste ----------------------------------------------------------------------------


def threshold_entry(strategy: str, adapter: str, threshold: float, tasks_sha256: str) -> dict[str, Any]:
    return {"strategy": strategy, "adapter": adapter, "threshold": threshold, "tasks_sha256": tasks_sha256}


def stages_toml_lines(entry: dict[str, Any]) -> list[str]:
    """The `thresholds` list of a stage's `[STAGE.confidence]` table in infra/stages.toml, holding
    this one entry (the table is there already, with its other settings)."""
    cells = ", ".join(f"{key} = {_toml_value(value)}" for key, value in entry.items())
    return ["thresholds = [", f"  {{ {cells} }},", "]"]


def _toml_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else json.dumps(value)  # a JSON string is a TOML basic string


def environment_line(entry: dict[str, Any]) -> str:
    """The `make local` setting: a JSON list of entries, quoted for a POSIX shell."""
    return f"{ENVIRONMENT_VARIABLE}='{json.dumps([entry], separators=(',', ':'))}'"


def summary_lines(run: Run, choice: Choice, strategy: str, adapter: str, tasks_sha256: str, level: float) -> list[str]:
    point, accuracy, escalated = choice.point, choice.accuracy, choice.escalated
    percent = f"{level * 100:g} %"
    none_escalated = " (it escalates none of them)" if point.kept == point.answered else ""
    return [
        f"threshold {choice.threshold!r} for strategy {strategy}, adapter {adapter}, task list sha256 {tasks_sha256}",
        f"keeps {point.kept} of {point.answered} answered turns, those of confidence {choice.threshold!r} or more"
        f"{none_escalated}; {run.turns} turns in the run",
        f"expected accuracy of the kept turns {accuracy.estimate:.3f} ({percent} Wilson interval {accuracy.low:.3f}–"
        f"{accuracy.high:.3f})",
        f"escalated share {escalated.estimate:.3f} of the answered turns ({percent} Wilson interval "
        f"{escalated.low:.3f}–{escalated.high:.3f})",
    ]
